package transport

import (
	"io"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestConnectionWaitsForARestartingInstance stops the only instance's
// agent, opens a connection to it through the mesh, and starts the agent
// again on its address once the caller waits: the app's connection goes
// through, late, instead of failing.
func TestConnectionWaitsForARestartingInstance(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "echo", be.port)
	c := dial(t, addr)
	io.WriteString(c, "before")
	c.CloseWrite()
	if got, err := readAll(t, c); got != "before" || err != nil {
		t.Fatalf("before the restart: %q, %v", got, err)
	}

	// The agent stops; its address stays its own, as across a restart.
	udp := server.pc.LocalAddr().(*net.UDPAddr)
	server.tr.Close()
	server.pc.Close()

	type result struct {
		got string
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		io.WriteString(c, "during")
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		done <- result{string(got), err}
	}()
	eventually(t, "the caller to wait for the restarting instance", func() bool {
		return client.metric(t, MetricAttemptFailures, "reason", "waiting_for_restart") >= 1
	})

	pc, err := net.ListenUDP("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	server.pc, server.reg = pc, prometheus.NewRegistry()
	server.start()
	if r := <-done; r.got != "during" || r.err != nil {
		t.Fatalf("a connection made while the instance restarted: %q, %v; want it carried once the agent is back", r.got, r.err)
	}
}
