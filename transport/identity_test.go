package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/transport/transporttest"
)

// pingPong writes a line on c and expects it echoed back.
func pingPong(t *testing.T, r *bufio.Reader, c net.Conn, i int) {
	t.Helper()
	msg := fmt.Sprintf("message %d %s\n", i, strings.Repeat("z", 4000))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %d: %v", i, err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != msg {
		t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
	}
}

func TestCertRotationDropsNoStream(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "echo", be.port)

	old := dial(t, addr)
	oldR := bufio.NewReader(old)
	i := 0
	for ; i < 10; i++ {
		pingPong(t, oldR, old, i)
	}

	// Rotation: a new root joins the bundles, both agents get leaves from
	// it (as a renewal would), and the old root is retired.
	ca2, err := transporttest.NewCA(testTD)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []*agent{server, client} {
		a.id.SetRoots(m.ca, ca2)
		cert, err := ca2.IssueNode(a.name, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if a == server {
			cert, err = ca2.IssueNode(a.name, []string{"echo"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
		}
		a.id.SetCertificate(cert)
	}
	for ; i < 20; i++ {
		pingPong(t, oldR, old, i) // the stream carries on over the rotation
	}

	// Retire the connection the old stream uses, as expiry would: new
	// streams go on a fresh connection with the new certificates.
	oldConn, _ := client.tr.tun.PeerConn("server")
	client.tr.tun.Retire("server")
	for _, a := range []*agent{server, client} {
		a.id.SetRoots(ca2) // old root retired
	}
	fresh := dial(t, addr)
	freshR := bufio.NewReader(fresh)
	for j := 0; j < 10; j++ {
		pingPong(t, freshR, fresh, j)
		pingPong(t, oldR, old, i) // and the old one still works
		i++
	}
	cur, _ := client.tr.tun.PeerConn("server")
	if cur.Conn == nil || cur.Conn == oldConn.Conn {
		t.Fatal("the fresh stream did not get a new connection")
	}
	if got := cur.Local; got != client.id.Certificate() {
		t.Error("the new connection does not present the rotated certificate")
	}
	if n := server.metric(t, MetricPeerConns, "direction", "accepted"); n != 2 {
		t.Errorf("server holds %v connections, want 2 (old draining, new)", n)
	}
	// The old connection closes once its last stream ends.
	old.Close()
	select {
	case <-oldConn.Conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the drained connection was not closed")
	}
	pingPong(t, freshR, fresh, 99)
}

func TestClaimFollowsReissuedCertificate(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	// A first connection, as the node, opens the QUIC connection with a
	// certificate that names no service.
	addr := client.vipAddr(t, "echo", be.port)
	c := dial(t, addr)
	c.CloseWrite()
	if got, _ := readAll(t, c); got != "" {
		t.Fatalf("got %q", got)
	}
	// Now frontend is registered: its certificate is reissued, and its
	// upstream claims it. The connection in place cannot prove it.
	cert, err := m.ca.IssueNode("client", []string{"frontend"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client.id.SetCertificate(cert)
	bind := freeAddr(t)
	client.local.Set([]LocalService{{Name: "frontend", Upstreams: []Upstream{{Service: "echo", LocalBind: bind}}}})
	eventually(t, "upstream listener", func() bool {
		for _, l := range client.tr.Listeners() {
			if l.Kind == "upstream" {
				return true
			}
		}
		return false
	})
	u := dial(t, bind)
	io.WriteString(u, "as frontend")
	u.CloseWrite()
	if got, err := readAll(t, u); got != "as frontend" || err != nil {
		t.Fatalf("upstream call: %q, %v", got, err)
	}
	if n := server.metric(t, MetricRefused, "reason", "identity_mismatch"); n != 0 {
		t.Errorf("%v identity mismatches: the client should have reconnected first", n)
	}
	calls := server.authz.seen()
	if last := calls[len(calls)-1]; last != m.ca.ServiceID("frontend")+"->echo" {
		t.Errorf("last call was %s", last)
	}
}

func TestUpstreamListenersFollowDefinitions(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	bind := freeAddr(t)
	client := m.addAgent("client", []LocalService{{Name: "frontend", Upstreams: []Upstream{{Service: "echo", LocalBind: bind}}}}, agentOpts{})
	isUpstream := func(l ListenerInfo) bool { return l.Kind == "upstream" }
	eventually(t, "upstream listener", func() bool { return slices.ContainsFunc(client.tr.Listeners(), isUpstream) })
	ls := client.tr.Listeners()
	i := slices.IndexFunc(ls, isUpstream)
	if i < 0 || ls[i].Addr != bind || ls[i].Source != m.ca.ServiceID("frontend") {
		t.Fatalf("listeners %+v, want an upstream on %s as frontend", ls, bind)
	}
	c := dial(t, bind)
	io.WriteString(c, "hi")
	c.CloseWrite()
	if got, err := readAll(t, c); got != "hi" || err != nil {
		t.Fatalf("got %q, %v", got, err)
	}
	if calls := server.authz.seen(); len(calls) != 1 || calls[0] != m.ca.ServiceID("frontend")+"->echo" {
		t.Fatalf("authorizer saw %v", calls)
	}
	client.local.Set(nil)
	eventually(t, "upstream listener to close", func() bool {
		_, err := net.Dial("tcp", bind)
		return err != nil
	})
}

func TestVIPListenersFollowCatalog(t *testing.T) {
	m := newMesh(t)
	server := m.addAgent("server", []LocalService{{Name: "api", Ports: []int{18081}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	client.vipAddr(t, "api", 18081)

	// A second instance declares another port too: the union is listened on.
	server.services[0].Ports = append(server.services[0].Ports, catalogPort(18082))
	m.publish()
	client.vipAddr(t, "api", 18082)
	vip, ok := client.tr.VIPs().VIP("api")
	if !ok {
		t.Fatal("no VIP for api")
	}
	if name, ok := client.tr.VIPs().ServiceAt(vip); !ok || name != "api" {
		t.Errorf("ServiceAt(%v) = %q, %v", vip, name, ok)
	}

	// The service leaves: its listeners and its VIP go.
	server.services = nil
	m.publish()
	eventually(t, "VIP listeners to close", func() bool { return len(client.tr.Listeners()) == 0 })
	if _, ok := client.tr.VIPs().VIP("api"); ok {
		t.Error("VIP kept after the service left")
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("%s:18081", vip)); err == nil {
		t.Error("VIP port still accepts connections")
	}
}

func TestVIPSkipsLocallyDeclaredPorts(t *testing.T) {
	m := newMesh(t)
	m.addAgent("server", []LocalService{{Name: "api", Ports: []int{18091, 18092}}}, agentOpts{})
	// The client runs a service on 18091 itself: a VIP listener on that
	// port could keep it from binding 0.0.0.0:18091.
	client := m.addAgent("client", []LocalService{{Name: "mine", Ports: []int{18091}}}, agentOpts{})
	client.vipAddr(t, "api", 18092)
	for _, l := range client.tr.Listeners() {
		if l.Port == 18091 {
			t.Errorf("VIP listener on a locally declared port: %+v", l)
		}
	}
}

// TestSockDiagIdentity runs a caller as nobody: its VIP connection must
// carry the identity of the local service that runs as nobody.
func TestSockDiagIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a caller as another user")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash for its /dev/tcp client")
	}
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", []LocalService{{Name: "frontend", User: "nobody"}}, agentOpts{})
	addr := client.vipAddr(t, "echo", be.port)
	host, port, _ := net.SplitHostPort(addr)

	cmd := exec.Command(bash, "-c", fmt.Sprintf(
		"exec 3<>/dev/tcp/%s/%s && echo from-nobody >&3 && read -r line <&3 && echo \"$line\"", host, port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := runWithin(cmd, 20*time.Second); err != nil {
		t.Fatalf("caller as nobody: %v (output %q)", err, out.String())
	}
	if out.String() != "from-nobody\n" {
		t.Fatalf("caller read %q", out.String())
	}
	// And a caller running as root is not frontend: it gets the node.
	c := dial(t, addr)
	c.CloseWrite()
	readAll(t, c)

	calls := server.authz.seen()
	want := []string{m.ca.ServiceID("frontend") + "->echo", m.ca.NodeID("client") + "->echo"}
	if len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] {
		t.Fatalf("authorizer saw %v, want %v", calls, want)
	}
}

func runWithin(cmd *exec.Cmd, d time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("timed out after %s", d)
	}
}

func catalogPort(p int) catalog.Port { return catalog.Port{Name: fmt.Sprint(p), Port: p} }
