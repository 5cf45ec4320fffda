package transport

import (
	"context"
	"net"
	"strings"

	"github.com/meshwork/meshwork/transport/l4"
	"github.com/meshwork/meshwork/transport/tunnel"
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
	byProto map[string]Handler // lower-cased protocol -> its handler
}

func newHandlerSet(p *l4.Proxy) handlerSet {
	return handlerSet{l4: p, byProto: map[string]Handler{ProtocolTCP: p}}
}

// handlerFor picks the handler of service's protocol.
func (t *Transport) handlerFor(service string) Handler {
	proto := ProtocolTCP
	if t.deps.Protocols != nil {
		proto = t.deps.Protocols.ProtocolOf(service)
	}
	return t.handlers.pick(proto)
}

// pick maps a protocol to its handler. Only the per-connection handler
// exists so far: "http", "http2" and "grpc" services are carried per
// connection, as they were before per-request handling, and so is any
// protocol this version does not know; "" is "tcp". The per-request
// handler is added to byProto under its protocols.
func (hs handlerSet) pick(proto string) Handler {
	if proto == "" {
		proto = ProtocolTCP
	}
	if h, ok := hs.byProto[strings.ToLower(proto)]; ok {
		return h
	}
	return hs.l4
}

// serveStream is the tunnel's Deps.Serve: it hands an admitted inbound
// stream to the handler of its service's protocol.
func (t *Transport) serveStream(ctx context.Context, in *tunnel.Inbound) {
	t.handlerFor(in.Target.Service).ServeStream(ctx, in)
}
