package transport

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEndToEndEcho(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})

	addr := client.vipAddr(t, "echo", be.port)
	vip, _ := client.tr.VIPs().VIP("echo")
	if !strings.HasPrefix(addr, vip.String()+":") {
		t.Fatalf("listener %s is not on the VIP %s", addr, vip)
	}
	for i := range 3 {
		c := dial(t, addr)
		msg := fmt.Sprintf("hello %d through the mesh", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, err := readAll(t, c)
		if err != nil || got != msg {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
	}
	// Every connection shares the one QUIC connection to the server.
	if n := client.metric(t, MetricPeerDials, "result", "ok"); n != 1 {
		t.Errorf("peer dials = %v, want 1", n)
	}
	if n := client.metric(t, MetricOutbound, "result", "ok"); n != 3 {
		t.Errorf("outbound ok = %v, want 3", n)
	}
}

func TestEndToEndHTTP(t *testing.T) {
	m := newMesh(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 1024)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n%s", r.Method, r.URL.Path, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	m.addAgent("web-1", []LocalService{{Name: "web", Ports: []int{port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "web", port)

	hc := &http.Client{Timeout: 10 * time.Second}
	for i := range 20 { // keep-alive: many requests on one connection
		resp, err := hc.Get("http://" + addr + "/path/" + fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("GET /path/%d\n%s", i, body); string(b) != want {
			t.Fatalf("response %d = %.40q...", i, b)
		}
	}
}

func TestHalfClose(t *testing.T) {
	m := newMesh(t)
	// The service reads everything, then answers with a summary: it only
	// can if the caller's FIN travels through both agents.
	be := startBackend(t, func(c net.Conn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes", len(b))
	})
	// This one closes its side first and keeps reading: the caller must
	// see EOF and still be able to send.
	earlyRead := make(chan string, 1)
	early := startBackend(t, func(c net.Conn) {
		io.WriteString(c, "bye first")
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		earlyRead <- fmt.Sprintf("%s/%v", b, err)
	})
	m.addAgent("server", []LocalService{{Name: "sink", Ports: []int{be.port}}, {Name: "early", Ports: []int{early.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})

	t.Run("caller closes first", func(t *testing.T) {
		c := dial(t, client.vipAddr(t, "sink", be.port))
		payload := bytes.Repeat([]byte("a"), 100_000)
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, err := readAll(t, c)
		if err != nil || got != "got 100000 bytes" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("service closes first", func(t *testing.T) {
		c := dial(t, client.vipAddr(t, "early", early.port))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 64)
		var got []byte
		for {
			n, err := c.Read(b)
			got = append(got, b[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
		}
		if string(got) != "bye first" {
			t.Fatalf("got %q", got)
		}
		// Our side is still open for writing after the service's FIN.
		if _, err := io.WriteString(c, "late data"); err != nil {
			t.Fatalf("write after peer FIN: %v", err)
		}
		c.CloseWrite()
		// The service finishes when it has read "late data"; then the
		// connection ends without error.
		rest, err := readAll(t, c)
		if err != nil || rest != "" {
			t.Fatalf("after close: %q, %v", rest, err)
		}
		if got := <-earlyRead; got != "late data/<nil>" {
			t.Fatalf("service read %q", got)
		}
	})
}

func TestBackpressure(t *testing.T) {
	m := newMesh(t)
	release := make(chan struct{})
	sums := make(chan [32]byte, 1)
	// The service does not read until released, then reads everything.
	be := startBackend(t, func(c net.Conn) {
		<-release
		h := sha256.New()
		io.Copy(h, c)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		sums <- sum
	})
	m.addAgent("server", []LocalService{{Name: "slow", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	c := dial(t, client.vipAddr(t, "slow", be.port))

	// Write until the path is full: the write blocks (its deadline hits)
	// instead of buffering without bound somewhere in the agents.
	const limit = 1 << 30
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	h := sha256.New()
	var written int
	for written < limit {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(chunk)
		h.Write(chunk[:n])
		written += n
		if err != nil {
			if !errors.Is(err, errTimeout) && !isTimeout(err) {
				t.Fatalf("write: %v", err)
			}
			break
		}
	}
	if written >= limit {
		t.Fatalf("wrote %d bytes without blocking: no backpressure", written)
	}
	// Bound: socket buffers, two copy buffers per agent and the QUIC
	// stream window (MaxStreamWindow, 16 MiB by default).
	if written > 64<<20 {
		t.Fatalf("%d bytes buffered in flight; backpressure is too loose", written)
	}
	t.Logf("blocked after %d KiB in flight", written>>10)
	c.SetWriteDeadline(time.Time{})
	close(release)
	c.CloseWrite()
	var want [32]byte
	copy(want[:], h.Sum(nil))
	select {
	case got := <-sums:
		if got != want {
			t.Fatal("the service received different bytes than were sent")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the service never finished reading")
	}
}

var errTimeout = errors.New("timeout")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestManyConcurrentConnections(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "echo", be.port)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := strings.Repeat(fmt.Sprint(i), 1000)
			io.WriteString(c, msg)
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil || string(b) != msg {
				errs <- fmt.Errorf("conn %d: %d bytes, %v", i, len(b), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	eventually(t, "streams to finish", func() bool { return client.metric(t, MetricActive, "direction", "outbound") == 0 })
	// Fifty callers arrived at once with no connection to the server: they
	// waited for one dial.
	if n := client.metric(t, MetricPeerDials, "result", "ok") + client.metric(t, MetricPeerDials, "result", "failed"); n != 1 {
		t.Errorf("%v peer dials, want 1 shared by all callers", n)
	}
}

func TestRedialAfterPeerRestart(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "echo", be.port)
	roundTrip := func(msg string) {
		t.Helper()
		c := dial(t, addr)
		io.WriteString(c, msg)
		c.CloseWrite()
		if got, err := readAll(t, c); got != msg || err != nil {
			t.Fatalf("echo %q = %q, %v", msg, got, err)
		}
	}
	roundTrip("before")
	server.restart()
	// The old connection is gone (the server said so when it closed); the
	// next caller dials the restarted agent.
	eventually(t, "the client to notice the restart", func() bool {
		return client.metric(t, MetricPeerConns, "direction", "dialed") == 0
	})
	roundTrip("after")
	if n := client.metric(t, MetricPeerDials, "result", "ok"); n != 2 {
		t.Errorf("peer dials = %v, want 2 (one per server life)", n)
	}
}

func TestPeerCrashAndStatelessReset(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	key := [32]byte{1, 2, 3}
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{
		cfg: func(c *Config) { c.StatelessResetKey = &key },
	})
	// Without the reset, the client would only learn of the crash when a
	// status read timed out, after a minute.
	client := m.addAgent("client", nil, agentOpts{cfg: func(c *Config) {
		c.AttemptTimeout = time.Minute
		c.ConnectTimeout = 2 * time.Minute
		c.PeerIdleTimeout = 2 * time.Minute
	}})
	addr := client.vipAddr(t, "echo", be.port)
	roundTrip := func(msg string) {
		t.Helper()
		c := dial(t, addr)
		io.WriteString(c, msg)
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(c)
		if string(b) != msg || err != nil {
			t.Fatalf("echo %q = %q, %v", msg, b, err)
		}
	}
	roundTrip("before")
	// The server crashes: its socket goes away first, so it says nothing
	// to the client, whose connection still looks alive.
	server.pc.Close()
	server.tr.Close()
	if client.metric(t, MetricPeerConns, "direction", "dialed") != 1 {
		t.Fatal("the client noticed a silent crash; the test proves nothing")
	}
	server.restart()
	// The restarted server answers the stale connection's packets with a
	// stateless reset (same key), and the call is retried on a fresh one:
	// the caller sees nothing of it, though there is one instance only.
	roundTrip("after")
	if n := client.metric(t, MetricAttemptFailures, "reason", "connection_lost"); n != 1 {
		t.Errorf("connection_lost attempts = %v, want 1", n)
	}
}
