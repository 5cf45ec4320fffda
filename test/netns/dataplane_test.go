//go:build e2e

package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/transport"
)

// The data-plane scenario runs five hosts with the real binary:
//
//	h1  server (bootstrap_expect 1): the CA and the policy
//	h2  client "A": the caller; its agent's DNS serves the host's resolver
//	h3  client "B": web (a Go HTTP server on 127.0.0.1:8080)
//	h4  client "C": web, the same
//	h5  client with a certificate from another CA: the intruder
//
// Clients bootstrap with tokens made on h1. The caller runs plain
// `curl http://web.service.mesh:8080/...`: glibc on h2 asks the agent's DNS
// (ports.dns 53, /etc/netns/<ns>/resolv.conf), which answers the VIP of web
// on h2; the agent tunnels the connection to h3 or h4 over QUIC with mutual
// TLS. The web servers listen on loopback only, so nothing but the tunnel
// reaches them from another host.
const (
	webPort    = 8080
	tunnelPort = "7948"
)

// helloBinary builds examples/hello, the demo's web server.
func helloBinary(t *testing.T) string {
	t.Helper()
	return meshtest.Build(t, "./examples/hello")
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/deps.sh e2e)", tool)
		}
	}
}

// useAgentResolver points the host's resolver (glibc, through `ip netns
// exec`, which bind-mounts /etc/netns/<ns>/resolv.conf) at the agent's DNS
// on 127.0.0.1:53.
func useAgentResolver(t *testing.T, h *Host) {
	t.Helper()
	dir := filepath.Join("/etc/netns", h.NS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// webService is the config of a web instance on h.
func webService(h *Host) string {
	return fmt.Sprintf(`services:
  - name: web
    id: web-%s
    port: %d
    checks:
      - http: http://127.0.0.1:%d/health
        interval: 1s
        timeout: 1s
`, h.Name, webPort, webPort)
}

// curl fetches url from host h; the body, or an error with curl's message.
func curl(h *Host, url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, "curl", "-sS", "--max-time", "10", url)
	if err != nil {
		return "", fmt.Errorf("curl %s: %v: %s", url, err, strings.TrimSpace(out))
	}
	return out, nil
}

// servedBy returns the web instance that answered, from hello's answer.
func servedBy(body string) string {
	for _, name := range []string{"web-h3", "web-h4"} {
		if strings.Contains(body, "hello from "+name+" ") {
			return name
		}
	}
	return ""
}

// metric sums the samples of a Prometheus metric on an agent's API whose
// labels contain labels (as written in the text format, e.g.
// `reason="unauthorized"`).
func metric(a *Agent, name, labels string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := a.Host.Run(ctx, "curl", "-sS", "--max-time", "10", "http://127.0.0.1:8500/v1/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics of %s: %v: %s", a.Host.Name, err, out)
	}
	var sum float64
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		if labels != "" && !strings.Contains(line, labels) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics of %s: %q: %v", a.Host.Name, line, err)
		}
		sum += v
	}
	return sum, nil
}

// capture is tshark writing a raw pcap of one interface of a host.
type capture struct {
	proc     *Proc
	file     string
	sentinel func(tag string) error // sends a packet the filter takes, carrying tag
}

// startCapture captures iface of h with a BPF filter. tshark reports its
// start before the kernel hands it packets, and drops what it has not read
// when stopped, so both ends are marked: sentinel sends a packet that the
// filter takes, carrying a tag, and the capture counts as started (or
// complete) once the tag is in the file.
func startCapture(t *testing.T, h *Host, iface, filter string, sentinel func(tag string) error) *capture {
	t.Helper()
	file := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.pcap", h.Name, iface))
	p := h.Start("tshark", "-n", "-i", iface, "-f", filter, "-F", "pcap", "-w", file)
	c := &capture{proc: p, file: file, sentinel: sentinel}
	c.mark(t, "mw-capture-start-")
	return c
}

// mark sends sentinels until one is in the file.
func (c *capture) mark(t *testing.T, prefix string) {
	t.Helper()
	tag := randomTag(prefix)
	Eventually(t, 60*time.Second, "tshark captures "+prefix, func() error {
		select {
		case <-c.proc.Done():
			b, _ := os.ReadFile(c.proc.Log)
			t.Fatalf("tshark exited: %s", b)
		default:
		}
		if b, _ := os.ReadFile(c.file); bytes.Contains(b, []byte(tag)) {
			return nil
		}
		return c.sentinel(tag)
	})
}

// stop marks the end, ends the capture and returns the raw file.
func (c *capture) stop(t *testing.T) []byte {
	t.Helper()
	c.mark(t, "mw-capture-end-")
	c.proc.Signal(syscall.SIGINT)
	if _, ok := c.proc.Wait(60 * time.Second); !ok {
		t.Fatalf("tshark did not stop")
	}
	b, err := os.ReadFile(c.file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// httpSentinel sends a request for /tag to the local web server of h.
func httpSentinel(h *Host) func(string) error {
	return func(tag string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := h.Run(ctx, "curl", "-sS", "--max-time", "5", fmt.Sprintf("http://127.0.0.1:%d/%s", webPort, tag)); err != nil {
			return fmt.Errorf("sentinel: %v: %s", err, out)
		}
		return fmt.Errorf("sentinel %s not captured yet", tag)
	}
}

// udpSentinel sends tag in a UDP datagram from h to the discard port of to.
func udpSentinel(h *Host, to string) func(string) error {
	return func(tag string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := h.Run(ctx, "bash", "-c", fmt.Sprintf("printf %%s %s > /dev/udp/%s/9", tag, to)); err != nil {
			return fmt.Errorf("sentinel: %v: %s", err, out)
		}
		return fmt.Errorf("sentinel %s not captured yet", tag)
	}
}

// quicHeaders decodes a capture as QUIC and counts its packets: all of
// them, those tshark parses as QUIC, and how many have long and short
// headers.
func quicHeaders(t *testing.T, file string) (total, quic, long, short int) {
	t.Helper()
	cmd := exec.Command("tshark", "-n", "-r", file, "-d", "udp.port=="+tunnelPort+",quic", "-Y", "udp.port=="+tunnelPort,
		"-T", "fields", "-e", "frame.number", "-e", "quic.header_form", "-e", "quic.version")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r: %v: %s", err, stderr.Bytes())
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		total++
		f := strings.Split(line, "\t")
		if len(f) < 2 || f[1] == "" {
			continue
		}
		quic++
		// A datagram may coalesce several packets: "1,1" or "1,0".
		form := strings.Split(f[1], ",")[0]
		switch form {
		case "1":
			long++
		case "0":
			short++
		}
		if form == "1" && len(f) > 2 && f[2] != "" && !strings.HasPrefix(f[2], "0x00000001") {
			t.Errorf("QUIC long header of version %s, want 1", f[2])
		}
	}
	return total, quic, long, short
}

func randomTag(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestDataPlaneEndToEnd is the data plane across hosts with the real binary:
// DNS names to VIPs, QUIC with mutual TLS between hosts (and no plaintext on
// the wire), default deny, Intentions, a certificate from another CA, and
// the failure of one of two instances.
func TestDataPlaneEndToEnd(t *testing.T) {
	needTools(t, "curl", "tshark", "dig")
	nw := New(t, 5)
	hello := helloBinary(t)
	h1, a, b, c, x := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2], nw.Hosts[3], nw.Hosts[4]
	enc, ck := Key(), Key()
	join := []string{h1.Addr}

	server := h1.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Server: true, BootstrapExpect: 1})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := server.CLI("ca", "roots")
		return err
	})
	token := func(h *Host) string {
		tok, err := server.Token(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	useAgentResolver(t, a)
	caller := a.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: join, Token: token(a), Extra: "ports:\n  dns: 53\n"})
	web := map[string]*Agent{}
	for _, h := range []*Host{b, c} {
		h.Start(hello, "-addr", fmt.Sprintf("127.0.0.1:%d", webPort), "-name", "web-"+h.Name)
		web[h.Name] = h.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: join, Token: token(h), Extra: webService(h)})
	}

	// Every client holds a leaf from h1's CA, and h2 sees both instances
	// passing, each on a node whose tunnel serves.
	for _, ag := range []*Agent{caller, web["h3"], web["h4"]} {
		Eventually(t, 90*time.Second, ag.Host.Name+" holds a leaf", func() error {
			out, err := ag.CLI("ca", "cert")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "spiffe://meshwork.local/node/"+ag.Host.Name) {
				return fmt.Errorf("leaf: %s", out)
			}
			return nil
		})
	}
	waitForBothWebs(t, caller)

	// The name resolves to a VIP of h2, through the host's own resolver.
	var vip netip.Addr
	Eventually(t, 60*time.Second, "web.service.mesh answers a VIP on h2", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := a.Run(ctx, "getent", "ahostsv4", "web.service.mesh")
		if err != nil {
			return fmt.Errorf("getent: %v: %s", err, out)
		}
		f := strings.Fields(out)
		if len(f) == 0 {
			return fmt.Errorf("getent: %q", out)
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil || !netip.MustParsePrefix("127.240.0.0/12").Contains(ip) {
			return fmt.Errorf("web.service.mesh is %q, want a VIP in 127.240.0.0/12", f[0])
		}
		vip = ip
		return nil
	})
	if out, err := curl(a, fmt.Sprintf("http://web.service.direct.mesh:%d/", webPort)); err == nil {
		t.Fatalf("the web servers are reachable without the mesh: %s", out)
	}
	t.Logf("web.service.mesh on h2 is %s", vip)
	url := func(path string) string { return fmt.Sprintf("http://web.service.mesh:%d/%s", webPort, path) }

	// Capture h2's tunnel traffic from before the first call, so that the
	// handshakes are in it.
	wire := startCapture(t, a, "eth0", "udp port "+tunnelPort+" or udp port 9", udpSentinel(a, h1.Addr))

	t.Run("default deny refuses the call", func(t *testing.T) {
		if out, err := curl(a, url("denied")); err == nil {
			t.Fatalf("a call went through with no policy: %s", out)
		}
		Eventually(t, 30*time.Second, "h3 or h4 counts the refusal", func() error {
			var n float64
			for _, w := range web {
				v, err := metric(w, "meshwork_transport_refused_streams_total", `reason="unauthorized"`)
				if err != nil {
					return err
				}
				n += v
			}
			if n < 1 {
				return fmt.Errorf("%v refusals", n)
			}
			return nil
		})
	})

	marker := randomTag("mw-marker-")
	t.Run("IntentionDefaults allow opens the mesh; the wire shows QUIC only", func(t *testing.T) {
		if _, err := applyFile(t, caller, "kind: IntentionDefaults\nname: default\naction: allow\n"); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 60*time.Second, "a call through the mesh", func() error {
			out, err := curl(a, url("warmup"))
			if err == nil && servedBy(out) == "" {
				return fmt.Errorf("answer %q", out)
			}
			return err
		})
		lo := map[string]*capture{}
		for _, h := range []*Host{b, c} {
			lo[h.Name] = startCapture(t, h, "lo", fmt.Sprintf("tcp port %d", webPort), httpSentinel(h))
		}
		out, err := curl(a, url(marker))
		if err != nil {
			t.Fatal(err)
		}
		who := servedBy(out)
		t.Logf("the marker request was served by %s", who)
		wireBytes := wire.stop(t)
		if bytes.Contains(wireBytes, []byte(marker)) {
			t.Fatal("the request travels in clear between hosts")
		}
		total, quic, long, short := quicHeaders(t, wire.file)
		t.Logf("h2 eth0, udp port %s: %d datagrams, %d QUIC (%d long header, %d short header)", tunnelPort, total, quic, long, short)
		if total == 0 || quic != total || long == 0 || short == 0 {
			t.Fatalf("want every datagram QUIC, with long and short headers: %d datagrams, %d QUIC, %d long, %d short", total, quic, long, short)
		}
		seen := 0
		for name, cp := range lo {
			if bytes.Contains(cp.stop(t), []byte(marker)) {
				seen++
				if "web-"+name != who {
					t.Errorf("the marker is on %s's loopback, but %s answered", name, who)
				}
			}
		}
		if seen != 1 {
			t.Fatalf("the marker is on the loopback of %d receiving hosts, want 1 (the capture would not see plaintext)", seen)
		}
	})

	t.Run("an Intention deny blocks the call and deleting it allows again", func(t *testing.T) {
		if _, err := applyFile(t, caller, "kind: Intention\nname: web\nsources:\n  - name: \"*\"\n    action: deny\n"); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 60*time.Second, "the deny applies", func() error {
			if out, err := curl(a, url("deny")); err == nil {
				return fmt.Errorf("still served: %s", out)
			}
			return nil
		})
		if out, err := caller.CLI("policy", "delete", "Intention", "web"); err != nil {
			t.Fatalf("policy delete: %v: %s", err, out)
		}
		Eventually(t, 60*time.Second, "allowed again", func() error {
			_, err := curl(a, url("again"))
			return err
		})
	})

	t.Run("an agent with a certificate from another CA cannot connect", func(t *testing.T) {
		leaf := foreignCertificate(t, x)
		useAgentResolver(t, x)
		in := x.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: join, Extra: "ports:\n  dns: 53\n"})
		holdLeaf(t, in, leaf)
		Eventually(t, 60*time.Second, "the intruder's tunnel serves with its foreign leaf", func() error {
			var nodes []api.Node
			if err := caller.JSON(&nodes, "catalog", "nodes"); err != nil {
				return err
			}
			for _, n := range nodes {
				if n.Name == "h5" && n.TunnelPort > 0 {
					return nil
				}
			}
			return fmt.Errorf("h5 publishes no tunnel port yet")
		})
		before := refusedCerts(t, web)
		for i := 0; i < 3; i++ {
			if out, err := curl(x, url("intruder")); err == nil {
				t.Fatalf("the intruder got through: %s", out)
			}
		}
		Eventually(t, 30*time.Second, "h3 or h4 counts the refused certificate", func() error {
			if n := refusedCerts(t, web); n <= before {
				return fmt.Errorf("%v refused certificates, %v before", n, before)
			}
			return nil
		})
		logged := false
		for _, w := range web {
			b, _ := os.ReadFile(w.Proc.Log)
			if bytes.Contains(b, []byte("tunnel peer certificate refused")) && bytes.Contains(b, []byte("spiffe://meshwork.local/node/h5")) {
				logged = true
			}
		}
		if !logged {
			t.Fatal("no receiver logged the refused certificate of h5")
		}
		// The same call from a mesh member still works.
		if _, err := curl(a, url("still")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("stopping one instance's agent drains it, and no call fails", func(t *testing.T) {
		drainAndFailOver(t, a, web, url)
		waitForBothWebs(t, caller)
	})

	t.Run("killing one instance's agent moves the traffic to the other", func(t *testing.T) {
		killAndFailOver(t, a, web, url)
	})
}

// waitForBothWebs waits until the caller sees web on h3 and h4, passing,
// each on a node whose tunnel serves.
func waitForBothWebs(t *testing.T, caller *Agent) {
	t.Helper()
	Eventually(t, 90*time.Second, "h2 sees web on h3 and h4, passing, with tunnels", func() error {
		var es []api.CatalogServiceEntry
		if err := caller.JSON(&es, "catalog", "service", "web", "--passing"); err != nil {
			return err
		}
		var nodes []api.Node
		if err := caller.JSON(&nodes, "catalog", "nodes"); err != nil {
			return err
		}
		tunnels := map[string]int{}
		for _, n := range nodes {
			if n.Status == "alive" {
				tunnels[n.Name] = n.TunnelPort
			}
		}
		if len(es) != 2 || tunnels["h3"] == 0 || tunnels["h4"] == 0 || tunnels["h2"] == 0 {
			return fmt.Errorf("passing %d, tunnel ports of alive nodes %v", len(es), tunnels)
		}
		return nil
	})
}

// refusedCerts sums the refused peer certificates of the web agents.
func refusedCerts(t *testing.T, web map[string]*Agent) float64 {
	t.Helper()
	var n float64
	for _, w := range web {
		v, err := metric(w, "meshwork_tunnel_peer_certificates_refused_total", "")
		if err != nil {
			t.Fatal(err)
		}
		n += v
	}
	return n
}

// foreignCertificate runs a throwaway --dev agent on h as node h.Name: a CA
// of its own, in the same trust domain. It returns its leaf file (key and
// chain) for h.
func foreignCertificate(t *testing.T, h *Host) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dev")
	dev := h.Start(Binary(t), "agent", "--dev", "--node", h.Name, "--data-dir", dir)
	file := filepath.Join(dir, "ca", "leaf.pem")
	Eventually(t, 60*time.Second, "the foreign CA's leaf for "+h.Name, func() error {
		_, err := os.Stat(file)
		return err
	})
	dev.Signal(syscall.SIGTERM)
	if _, ok := dev.Wait(60 * time.Second); !ok {
		t.Fatal("the --dev agent did not stop")
	}
	leaf, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// holdLeaf stops the agent, puts leaf in its data directory and starts it
// again: it loads the leaf at start, and a client with a valid leaf needs
// no token.
func holdLeaf(t *testing.T, ag *Agent, leaf []byte) {
	t.Helper()
	ag.Proc.Signal(syscall.SIGTERM)
	if _, ok := ag.Proc.Wait(60 * time.Second); !ok {
		t.Fatal("the agent did not stop")
	}
	if err := os.MkdirAll(filepath.Join(ag.DataDir, "ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ag.DataDir, "ca", "leaf.pem"), leaf, 0o600); err != nil {
		t.Fatal(err)
	}
	ag.Restart()
}

// request is one call of a callLoop.
type request struct {
	start, end time.Time
	served     string
	err        error
}

// callLoop is callers on one host, each calling the web service in a loop,
// with every call recorded; bounded by a count and by 3 minutes.
type callLoop struct {
	mu   sync.Mutex
	reqs []request
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// startCalls starts workers callers on a, calling url(prefix-W-I), until
// maxCalls calls in all.
func startCalls(a *Host, url func(string) string, prefix string, workers, maxCalls int) *callLoop {
	l := &callLoop{stop: make(chan struct{})}
	deadline := time.Now().Add(3 * time.Minute)
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if l.startedAfter(time.Time{}) >= maxCalls || time.Now().After(deadline) {
					return
				}
				r := request{start: time.Now()}
				out, err := curl(a, url(fmt.Sprintf("%s-%d-%d", prefix, w, i)))
				r.end, r.err, r.served = time.Now(), err, servedBy(out)
				l.mu.Lock()
				l.reqs = append(l.reqs, r)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// startedAfter counts the recorded calls that started after t.
func (l *callLoop) startedAfter(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.reqs {
		if r.start.After(t) {
			n++
		}
	}
	return n
}

// finish stops the callers, waits for their calls to end and returns them.
func (l *callLoop) finish() []request {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.reqs
}

// drainAndFailOver holds slow calls from h2 in flight while the agent of an
// instance carrying one of them is stopped with SIGTERM, as systemd stops
// it, and fast calls keep coming. The agent leaves, drains and exits, and no
// call fails: neither the slow ones it carried to the end, nor the fast ones,
// which move to the other instance. The agent is started again at the end.
func drainAndFailOver(t *testing.T, a *Host, web map[string]*Agent, url func(string) string) {
	const slowCalls = 6
	type result struct {
		served string
		err    error
	}
	slow := make(chan result, slowCalls)
	for i := range slowCalls {
		go func() {
			out, err := curl(a, url(fmt.Sprintf("slow-%d?delay=6s", i)))
			slow <- result{servedBy(out), err}
		}()
	}
	// The victim is an instance whose agent carries a slow call now, as
	// its tunnel status shows.
	var victim, survivor string
	Eventually(t, 5*time.Second, "a slow call from h2 in flight on h3 or h4", func() error {
		for _, name := range []string{"h3", "h4"} {
			var st transport.Status
			if err := web[name].JSON(&st, "tunnel", "status"); err != nil {
				return err
			}
			for _, p := range st.Peers {
				if p.Node == "h2" && p.StreamsIn > 0 {
					victim = name
					return nil
				}
			}
		}
		return errors.New("no stream from h2 in flight yet")
	})
	survivor = map[string]string{"h3": "h4", "h4": "h3"}[victim]

	// The cap must outlast the stop, which waits for the slow calls: at
	// a few ms a call, 600 calls were once all made before the exit.
	loop := startCalls(a, url, "fast", 2, 3000)
	defer loop.finish() // the callers stop however this ends
	web[victim].Proc.Signal(syscall.SIGTERM)
	if _, ok := web[victim].Proc.Wait(40 * time.Second); !ok {
		t.Fatal("the stopped agent did not exit")
	}
	exited := time.Now()
	// Started again however this ends, so that a failure here does not
	// leave the next scenario one instance short.
	defer web[victim].Restart()
	Eventually(t, 60*time.Second, "20 fast calls started after the exit", func() error {
		if n := loop.startedAfter(exited); n < 20 {
			return fmt.Errorf("%d calls after the exit", n)
		}
		return nil
	})
	fast := loop.finish()

	carried := 0
	for range slowCalls {
		r := <-slow
		if r.err != nil {
			t.Errorf("a slow call in flight during the stop failed: %v", r.err)
		}
		if r.served == "web-"+victim {
			carried++
		}
	}
	if carried == 0 {
		t.Errorf("no slow call was served by %s, whose agent carried one when it was stopped", victim)
	}
	served := map[string]int{}
	for _, r := range fast {
		if r.err != nil {
			t.Errorf("a fast call failed (started %s from the agent's exit): %v", r.start.Sub(exited).Round(time.Millisecond), r.err)
			continue
		}
		if r.start.After(exited) {
			served[r.served]++
			if r.served != "web-"+survivor {
				t.Errorf("a call started after the exit was served by %q", r.served)
			}
		}
	}
	log, err := os.ReadFile(web[victim].Proc.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte("tunnel drained")) {
		t.Errorf("%s's agent did not log a completed drain", victim)
	}
	t.Logf("stopped %s's agent: %d slow calls carried to the end by it, %d fast calls, after the exit served by %v", victim, carried, len(fast), served)
}

// killAndFailOver runs callers on h2 while the agent of the instance that
// served most is killed with SIGKILL. Calls started after the kill must all
// succeed, on the other instance; of those running at the kill, at most
// each caller's one may fail.
func killAndFailOver(t *testing.T, a *Host, web map[string]*Agent, url func(string) string) {
	const workers = 3
	const maxRequests = 600
	// Who serves now?
	count := map[string]int{}
	for i := 0; i < 20; i++ {
		out, err := curl(a, url(fmt.Sprintf("before-%d", i)))
		if err != nil {
			t.Fatalf("before the kill: %v", err)
		}
		count[servedBy(out)]++
	}
	t.Logf("before the kill: %v", count)
	victim, survivor := "h3", "h4"
	if count["web-h4"] > count["web-h3"] {
		victim, survivor = "h4", "h3"
	}

	loop := startCalls(a, url, "loop", workers, maxRequests)
	defer loop.finish()
	// Kill once the loop is under way, then wait for enough calls started
	// after the kill.
	Eventually(t, 60*time.Second, "calls before the kill", func() error {
		if n := loop.startedAfter(time.Time{}); n < 15 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	killStart := time.Now()
	web[victim].Proc.Signal(syscall.SIGKILL)
	if _, ok := web[victim].Proc.Wait(30 * time.Second); !ok {
		t.Fatal("the killed agent did not exit")
	}
	killedAt := time.Now()
	Eventually(t, 150*time.Second, "60 calls started after the kill", func() error {
		if n := loop.startedAfter(killedAt); n < 60 {
			return fmt.Errorf("%d calls after the kill", n)
		}
		return nil
	})
	reqs := loop.finish()

	var before, inFlight, after, inFlightFailed int
	var slowest time.Duration
	served := map[string]int{}
	for _, r := range reqs {
		switch {
		case r.end.Before(killStart):
			before++
			if r.err != nil {
				t.Errorf("a call failed before the kill: %v", r.err)
			}
		case !r.start.After(killedAt):
			inFlight++
			if r.err != nil {
				inFlightFailed++
				t.Logf("in flight at the kill, failed: %v", r.err)
			}
		default:
			after++
			if r.err != nil {
				t.Errorf("a call started %s after the kill failed: %v", r.start.Sub(killedAt).Round(time.Millisecond), r.err)
				continue
			}
			served[r.served]++
			slowest = max(slowest, r.end.Sub(r.start))
			if r.served != "web-"+survivor {
				t.Errorf("a call started after the kill was served by %q", r.served)
			}
		}
	}
	t.Logf("killed %s's agent: %d calls before, %d in flight (%d failed), %d after, served after: %v, slowest after: %s",
		victim, before, inFlight, inFlightFailed, after, served, slowest.Round(time.Millisecond))
	if inFlightFailed > workers {
		t.Errorf("%d calls in flight failed, want at most %d (one per caller)", inFlightFailed, workers)
	}
}
