package transport

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/testnet"
)

// echoThrough sends msg through a new connection to addr and returns what
// came back, failing after limit.
func echoThrough(addr string, msg []byte, limit time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, limit)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo returned %d bytes, want the %d sent", len(got), len(msg))
	}
	return nil
}

// TestTunnelOnTheTwin runs two tunnels on the network twin: a lossy, slow
// link still carries every byte (QUIC recovers), a partition stops the
// tunnel, and the tunnel carries again once the link heals.
func TestTunnelOnTheTwin(t *testing.T) {
	m := newTwinMesh(t)
	be := startBackend(t, echo)
	m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "echo", be.port)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB

	if err := echoThrough(addr, msg, 10*time.Second); err != nil {
		t.Fatalf("healthy link: %v", err)
	}

	// 10 % loss and 5 ms each way: slower, still whole.
	lossy := testnet.Link{Drop: 0.1, Delay: 5 * time.Millisecond, Jitter: 2 * time.Millisecond}
	m.twin.SetLink("client", "server", lossy)
	m.twin.SetLink("server", "client", lossy)
	lostBefore := m.twin.Stats().Lost
	for i := range 3 {
		if err := echoThrough(addr, msg, 30*time.Second); err != nil {
			t.Fatalf("echo %d over a lossy link: %v", i, err)
		}
	}
	if m.twin.Stats().Lost == lostBefore {
		t.Fatal("the lossy link lost no packet: the tunnel does not run on the twin")
	}

	// Cut: nothing goes through. The bound is on a call that must fail.
	m.twin.Partition([]string{"client"}, []string{"server"})
	if err := echoThrough(addr, msg, 2*time.Second); err == nil {
		t.Fatal("an echo went through a partition")
	}

	m.twin.Heal()
	testnet.Eventually(t, time.Minute, "the tunnel to carry again after the heal", func() error {
		return echoThrough(addr, msg, 5*time.Second)
	})
}
