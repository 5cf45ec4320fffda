package transport

import (
	"context"
	"net"
	"strings"

	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/l7"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// Handler carries one protocol's traffic: transport/l4 carries each
// connection as one stream; a per-request handler for HTTP will carry each
// request. A handler uses the tunnel's Stream, Inbound and Connector, never
// the Transport. Both methods run on the connection's or stream's own
// goroutine, concurrently, and return once it is finished with.
type Handler interface {
	// ServeStream carries an inbound stream the tunnel admitted: it must
	// Accept, Refuse or Abort it.
	ServeStream(ctx context.Context, in *tunnel.Inbound)
	// ServeConn carries an application's connection taken on a VIP or
	// upstream listener, opening streams through conn. It owns c.
	ServeConn(ctx context.Context, c *net.TCPConn, conn tunnel.Connector)
}

// ProtocolSource gives the protocol of a service, as ServiceDefaults
// declares it ("tcp", "http", "http2", "grpc"); "" means "tcp". It is
// called per connection and per inbound stream, concurrently, and must not
// block: read an in-memory copy of the policy.
type ProtocolSource interface {
	ProtocolOf(service string) string
}

// ProtocolTCP is the protocol of every service without ServiceDefaults.
const ProtocolTCP = "tcp"

// handlerSet is the handlers by protocol.
type handlerSet struct {
	l4      *l4.Proxy          // the per-connection handler, and the fallback
	l7      *l7.Proxy          // the per-request handler
	byProto map[string]Handler // lower-cased protocol -> its handler
}

func newHandlerSet(conns *l4.Proxy, requests *l7.Proxy) handlerSet {
	return handlerSet{l4: conns, l7: requests, byProto: map[string]Handler{
		ProtocolTCP: conns,
		"http":      requests,
		"http2":     requests,
		"grpc":      requests,
	}}
}

// handlerFor picks the handler of service's protocol.
func (t *Transport) handlerFor(service string) Handler {
	proto := ProtocolTCP
	if t.deps.Protocols != nil {
		proto = t.deps.Protocols.ProtocolOf(service)
	}
	return t.handlers.pick(proto)
}

// pick maps a protocol to its handler: "http", "http2" and "grpc" are
// carried per request, "tcp" ("" too) and any protocol this version does
// not know per connection.
func (hs handlerSet) pick(proto string) Handler {
	if proto == "" {
		proto = ProtocolTCP
	}
	if h, ok := hs.byProto[strings.ToLower(proto)]; ok {
		return h
	}
	return hs.l4
}

// serveStream is the tunnel's Deps.Serve: a stream marked as carrying a
// request goes to the per-request handler, any other to the
// per-connection one. The caller's framing decides, not this node's view
// of the protocol, which a policy change may have moved on either agent.
func (t *Transport) serveStream(ctx context.Context, in *tunnel.Inbound) {
	if _, ok := in.Header.Extension(wire.ExtHTTP); ok {
		t.handlers.l7.ServeStream(ctx, in)
		return
	}
	t.handlers.l4.ServeStream(ctx, in)
}
