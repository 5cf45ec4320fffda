package transport

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// recordingHandler counts what it carries and hands it on.
type recordingHandler struct {
	next           Handler
	conns, streams atomic.Int32
}

func (h *recordingHandler) ServeStream(ctx context.Context, in *tunnel.Inbound) {
	h.streams.Add(1)
	if h.next != nil {
		h.next.ServeStream(ctx, in)
	}
}

func (h *recordingHandler) ServeConn(ctx context.Context, c *net.TCPConn, conn tunnel.Connector) {
	h.conns.Add(1)
	if h.next != nil {
		h.next.ServeConn(ctx, c, conn)
	}
}

// protocols is a ProtocolSource from a map; other services are "".
type protocols map[string]string

func (p protocols) ProtocolOf(service string) string { return p[strings.ToLower(service)] }

// TestPickHandler is the selection point: http, http2 and grpc go to the
// per-request handler, case-insensitively; "" is tcp; any other protocol
// is carried per connection by l4.
func TestPickHandler(t *testing.T) {
	proxy, err := l4.New(l4.Config{IdleTimeout: time.Hour, LocalDialTimeout: time.Second, CopyBuffer: 4096}, l4.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	requests, err := l7.New(l7.Config{}, l7.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer requests.Close()
	hs := newHandlerSet(proxy, requests)
	for _, tc := range []struct {
		proto string
		want  Handler
	}{
		{"", proxy},
		{"tcp", proxy},
		{"TCP", proxy},
		{"http", requests},
		{"HTTP", requests},
		{"http2", requests},
		{"grpc", requests},
		{"bogus", proxy},
	} {
		if got := hs.pick(tc.proto); got != tc.want {
			t.Errorf("pick(%q) = %T %p, want %T %p", tc.proto, got, got, tc.want, tc.want)
		}
	}
}

// TestHandlerPerProtocol carries a connection of an "http" service through
// two real agents with a handler registered for "http" on the calling
// agent: it gets the application's connection, and the bytes still arrive
// (it delegates to l4, whose stream the receiving agent carries per
// connection, as it carries every stream not marked as a request). A "tcp"
// service on the same agents does not reach it.
func TestHandlerPerProtocol(t *testing.T) {
	m := newMesh(t)
	web := startBackend(t, echo)
	db := startBackend(t, echo)
	protos := protocols{"web": "http"}
	withProtocols := func(d *Deps) { d.Protocols = protos }
	install := func(rec *recordingHandler) func(*Transport) {
		return func(tr *Transport) {
			rec.next = tr.handlers.l4
			tr.handlers.byProto["http"] = rec
		}
	}
	var onClient recordingHandler
	m.addAgent("server", []LocalService{{Name: "web", Ports: []int{web.port}}, {Name: "db", Ports: []int{db.port}}},
		agentOpts{deps: withProtocols})
	client := m.addAgent("client", nil, agentOpts{deps: withProtocols, setup: install(&onClient)})

	roundTrip := func(addr string) {
		t.Helper()
		c := dial(t, addr)
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		if got, err := readAll(t, c); err != nil || got != "ping" {
			t.Fatalf("echo through %s = %q, %v", addr, got, err)
		}
	}
	roundTrip(client.vipAddr(t, "db", db.port))
	if n := onClient.conns.Load(); n != 0 {
		t.Fatalf("a tcp service reached the http handler: %d connections", n)
	}
	roundTrip(client.vipAddr(t, "web", web.port))
	if n := onClient.conns.Load(); n != 1 {
		t.Errorf("the calling agent's http handler got %d connections, want 1", n)
	}
}
