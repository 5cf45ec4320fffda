package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
)

// nameThenEcho writes its name, then echoes until the caller half-closes.
func nameThenEcho(name string) func(net.Conn) {
	return func(c net.Conn) {
		io.WriteString(c, name+"\n")
		echo(c)
	}
}

// roundTrip writes msg on c and reads it back.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write through the tunnel: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("read back %q, %v; want %q", got, err, msg)
	}
}

// readLine reads up to and including the first newline.
func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("read after %q: %v", b.String(), err)
		}
		if one[0] == '\n' {
			return b.String()
		}
		b.WriteByte(one[0])
	}
}

func TestDrainFinishesInFlightAndSendsNewCallsElsewhere(t *testing.T) {
	m := newMesh(t)
	onlyA := startBackend(t, nameThenEcho("only-a"))
	// Two instances of web on one port number, as on two hosts.
	webPort := samePortBackends(t, nameThenEcho, "127.0.0.2", "127.0.0.3")
	a := m.addAgent("a", []LocalService{{Name: "only", Ports: []int{onlyA.port}}, {Name: "web", Address: "127.0.0.2", Ports: []int{webPort}}}, agentOpts{})
	m.addAgent("b", []LocalService{{Name: "web", Address: "127.0.0.3", Ports: []int{webPort}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})

	inFlight := dial(t, client.vipAddr(t, "only", onlyA.port))
	if got := readLine(t, inFlight); got != "only-a" {
		t.Fatalf("first line %q, want only-a", got)
	}

	drained := make(chan error, 1)
	go func() { drained <- a.tr.Drain(context.Background()) }()
	eventually(t, "a to drain", a.tr.Draining)
	eventually(t, "a's listeners to close", func() bool { return len(a.tr.Listeners()) == 0 })

	// The connection carried before the drain still works both ways.
	roundTrip(t, inFlight, "still here")
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with a connection in flight", err)
	default:
	}

	// New calls to a service that only the draining agent runs are refused
	// with shutting_down, and counted. The application sees a reset, which
	// may come before its connect returns.
	if refused, err := net.Dial("tcp", client.vipAddr(t, "only", onlyA.port)); err == nil {
		if got, err := readAll(t, refused); err == nil || got != "" {
			t.Errorf("a new call to the draining agent read %q, %v; want a reset", got, err)
		}
		refused.Close()
	}
	if n := a.metric(t, MetricRefused, "reason", "shutting_down"); n < 1 {
		t.Errorf("refused{shutting_down} = %v on the draining agent, want at least 1", n)
	}
	// New calls to a service with another instance all reach it.
	webAddr := client.vipAddr(t, "web", webPort)
	for i := range 10 {
		c := dial(t, webAddr)
		if got := readLine(t, c); got != "127.0.0.3" {
			t.Fatalf("call %d reached %q, want b's 127.0.0.3 (a is draining)", i, got)
		}
		c.Close()
	}

	// Drain returns once the last connection ends.
	inFlight.CloseWrite()
	if _, err := readAll(t, inFlight); err != nil {
		t.Fatalf("the in-flight connection did not end cleanly: %v", err)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after the last connection ended")
	}
}

func TestDrainOnTheCallingSide(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, nameThenEcho("api"))
	m.addAgent("server", []LocalService{{Name: "api", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "api", be.port)
	inFlight := dial(t, addr)
	if got := readLine(t, inFlight); got != "api" {
		t.Fatalf("first line %q, want api", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- client.tr.Drain(ctx) }()
	eventually(t, "the client's VIP listener to close", func() bool { return len(client.tr.Listeners()) == 0 })
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("a draining agent accepted a new application connection")
	}
	// A catalog change does not open the listeners again.
	client.m.publish()
	client.reconciled(t)
	roundTrip(t, inFlight, "carried on")
	if n := len(client.tr.Listeners()); n != 0 {
		t.Errorf("%d listeners open again while draining", n)
	}

	// Past its deadline Drain gives up and says how much was left; Close
	// then cuts it.
	cancel()
	select {
	case err := <-drained:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 connections") {
			t.Fatalf("Drain = %v, want context.Canceled naming 1 connection in flight", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain ignored its context")
	}
	client.tr.Close()
	if _, err := readAll(t, inFlight); err == nil {
		t.Error("the connection left in flight survived Close without an error")
	}
}

func TestDrainWithNothingInFlightReturnsAtOnce(t *testing.T) {
	m := newMesh(t)
	a := m.addAgent("a", nil, agentOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a drain that had to wait would fail
	if err := a.tr.Drain(ctx); err != nil {
		t.Fatalf("Drain with nothing in flight: %v", err)
	}
	a.tr.Close()
	if err := a.tr.Drain(ctx); err != nil {
		t.Fatalf("Drain after Close: %v", err)
	}
}

func TestNodeLeftKeepsStreamsInFlightButLeavesPool(t *testing.T) {
	m := newMesh(t)
	port := samePortBackends(t, nameThenEcho, "127.0.0.2", "127.0.0.3")
	b1 := m.addAgent("b1", []LocalService{{Name: "api", Address: "127.0.0.2", Ports: []int{port}}}, agentOpts{})
	m.addAgent("b2", []LocalService{{Name: "api", Address: "127.0.0.3", Ports: []int{port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "api", port)
	var onB1 *net.TCPConn
	for range 50 {
		c := dial(t, addr)
		if readLine(t, c) == "127.0.0.2" {
			onB1 = c
			break
		}
		c.Close()
	}
	if onB1 == nil {
		t.Fatal("50 connections and none reached b1")
	}

	// b1 leaves the cluster gracefully, as a stopping agent does before
	// it drains: its streams in flight carry on, new calls go to b2.
	b1.setStatus(catalog.StatusLeft)
	client.reconciled(t)
	for i := range 20 {
		c := dial(t, addr)
		if got := readLine(t, c); got != "127.0.0.3" {
			t.Fatalf("call %d reached %q after b1 left", i, got)
		}
		c.Close()
	}
	roundTrip(t, onB1, "still carried")
}
