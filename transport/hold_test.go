package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// pump streams numbered lines through c while the test restarts agents,
// and checks that every line comes back once and in order. The writer
// stays at most window lines ahead of the reader, so that the lines read
// after a restart were written after it.
type pump struct {
	c             *net.TCPConn
	stop          chan struct{}
	written, read atomic.Int64
	wrote         chan int64 // the writer's total, once it ends
	verdict       chan error // the reader's, once it ends
}

const window = 256

func startPump(c *net.TCPConn) *pump {
	p := &pump{c: c, stop: make(chan struct{}), wrote: make(chan int64, 1), verdict: make(chan error, 1)}
	go func() {
		defer func() { c.CloseWrite(); p.wrote <- p.written.Load() }()
		w := bufio.NewWriter(c)
		// Bounded: at most 10 million lines, and the test stops it.
		for n := int64(0); n < 10_000_000; n++ {
			for n-p.read.Load() >= window {
				select {
				case <-p.stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
			select {
			case <-p.stop:
				return
			default:
			}
			fmt.Fprintf(w, "%d\n", n)
			if err := w.Flush(); err != nil {
				return
			}
			p.written.Store(n + 1)
		}
	}()
	go func() {
		sc := bufio.NewScanner(c)
		var next int64
		for sc.Scan() {
			got, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err != nil || got != next {
				p.verdict <- fmt.Errorf("line %d read as %q: a byte was lost or repeated", next, sc.Text())
				return
			}
			next++
			p.read.Store(next)
		}
		if err := sc.Err(); err != nil {
			p.verdict <- fmt.Errorf("after %d lines: %w", next, err)
			return
		}
		p.verdict <- fmt.Errorf("EOF after %d lines", next)
	}()
	return p
}

// progress waits until a line written after the call came back.
func (p *pump) progress(t *testing.T, what string) {
	t.Helper()
	want := p.written.Load() + 1
	testnet.Eventually(t, 10*time.Second, what+": lines written since to come back", func() error {
		select {
		case err := <-p.verdict:
			p.verdict <- err
			return fmt.Errorf("the connection ended: %w", err)
		default:
		}
		if got := p.read.Load(); got < want {
			return fmt.Errorf("%d lines read, want %d", got, want)
		}
		return nil
	})
}

// finish stops the writer and checks that every line written came back.
func (p *pump) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	n := <-p.wrote
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	err := <-p.verdict
	if want := fmt.Sprintf("EOF after %d lines", n); err.Error() != want {
		t.Fatalf("the reader: %v; want %s", err, want)
	}
}

// handOver holds a's connections, stops its transport as a stopping
// process would, and gives the held sockets to a new transport on the same
// address, which resumes them.
func handOver(t *testing.T, a *agent) []l4.HeldConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held := a.tr.Hold(ctx)
	files := make([]*net.TCPConn, len(held))
	for i, h := range held {
		// The socket as a successor gets it: another descriptor, and the
		// old process's closed.
		f, err := h.Conn.File()
		if err != nil {
			t.Fatal(err)
		}
		h.Conn.Close()
		fc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		files[i] = fc.(*net.TCPConn)
	}
	a.restart()
	for i, h := range held {
		a.tr.Resume(h.State, files[i])
	}
	return held
}

// TestHeldConnectionSurvivesRestarts streams numbered lines through one
// connection while the caller's agent, then the instance's, each twice,
// hands it to a successor: no line is lost, repeated or reordered, and the
// connection ends cleanly.
func TestHeldConnectionSurvivesRestarts(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	p := startPump(dial(t, client.vipAddr(t, "echo", be.port)))
	p.progress(t, "before the restarts")

	// Each twice: a connection resumed once may be held again.
	for _, a := range []*agent{client, client, server, server} {
		reg := a.reg
		held := handOver(t, a)
		if len(held) != 1 {
			t.Fatalf("%s held %d connections, want 1", a.name, len(held))
		}
		if held[0].State.Callee != (a == server) || held[0].State.Service != "echo" {
			t.Errorf("%s held %+v", a.name, held[0].State)
		}
		if n := metricIn(t, reg, l4.MetricHeld, "result", "held"); n != 1 {
			t.Errorf("%s: %s{result=held} = %v, want 1", a.name, l4.MetricHeld, n)
		}
		p.progress(t, "after the restart of "+a.name)
	}
	p.finish(t)
	if n := server.metric(t, l4.MetricResumed, "result", "resumed"); n != 1 {
		t.Errorf("the server's last successor resumed %v, want 1", n)
	}
}

// TestHoldAndResumeNeedTheSessionsNode checks that only the agent of the
// node a session runs with may hold or resume it: another node, even one
// of the mesh, is refused, and the connection carries on.
func TestHoldAndResumeNeedTheSessionsNode(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, echo)
	server := m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	mallory := m.addAgent("mallory", nil, agentOpts{})
	p := startPump(dial(t, client.vipAddr(t, "echo", be.port)))
	p.progress(t, "before")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held := client.tr.Hold(ctx)
	if len(held) != 1 {
		t.Fatalf("held %d connections, want 1", len(held))
	}
	id, err := l4.ParseSessionID(held[0].State.Session)
	if err != nil {
		t.Fatal(err)
	}
	to := tunnel.Peer{Node: "server", Addr: server.pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	for _, c := range []struct {
		source string
		want   wire.Code
	}{
		{spiffeid.Node(testTD, "mallory"), wire.CodeNoSession},       // its own identity: not its session
		{spiffeid.Node(testTD, "client"), wire.CodeIdentityMismatch}, // another node's identity
		{spiffeid.Service(testTD, "web"), wire.CodeIdentityMismatch}, // not a node identity
	} {
		hdr := wire.Header{Service: "echo", Port: uint16(be.port), Source: c.source,
			Extensions: []wire.Extension{{Type: wire.ExtResume, Value: id[:]}}}
		_, err := mallory.tr.tun.OpenControl(ctx, to, &hdr)
		var re *tunnel.RefusedError
		if !errors.As(err, &re) || re.Code != c.want {
			t.Errorf("mallory resuming as %s: %v; want refused %s", c.source, err, c.want)
		}
	}

	// The rightful successor resumes it.
	f, err := held[0].Conn.File()
	if err != nil {
		t.Fatal(err)
	}
	held[0].Conn.Close()
	client.restart()
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	client.tr.Resume(held[0].State, fc.(*net.TCPConn))
	p.progress(t, "after the resume")
	p.finish(t)
}

// TestHalfClosedConnectionIsNotHeld: a hold cannot carry a direction
// that has ended, so a connection whose application half-closed is left
// to the drain, and completes.
func TestHalfClosedConnectionIsNotHeld(t *testing.T) {
	m := newMesh(t)
	answer, read := make(chan struct{}), make(chan struct{})
	be := startBackend(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		close(read)
		<-answer
		c.Write(b)
	})
	m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	c := dial(t, client.vipAddr(t, "echo", be.port))
	io.WriteString(c, "request")
	c.CloseWrite()
	<-read // the client's agent passed the half-close on

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if held := client.tr.Hold(ctx); len(held) != 0 {
		t.Fatalf("held %d connections, want none", len(held))
	}
	if n := client.metric(t, l4.MetricHeld, "result", "not_holdable"); n != 1 {
		t.Errorf("%s{result=not_holdable} = %v, want 1", l4.MetricHeld, n)
	}
	close(answer)
	if got, err := readAll(t, c); got != "request" || err != nil {
		t.Fatalf("the connection left to the drain: %q, %v; want its answer", got, err)
	}
}
