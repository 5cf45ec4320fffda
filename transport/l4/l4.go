// Package l4 is the per-connection protocol handler of the data plane: it
// carries a TCP connection as one tunnel stream, byte for byte, keeping
// half-close and backpressure.
//
// On the receiving agent, ServeStream takes a stream the tunnel admitted,
// applies the service's Fault policy (fault.go), dials the local service
// the tunnel's decision names, answers accepted
// (or the refusal the dial earned) and splices. On the calling agent,
// ServeConn takes an application's connection and a Connector, which
// package transport's routing and balancing implement, opens one stream
// and splices.
//
// It depends on the tunnel's Stream, Inbound and Connector only, never on
// transport's Transport: a per-request handler for HTTP sits beside it with
// the same two entry points.
package l4

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/connset"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/spans"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// Config configures a Proxy. transport.Config.Validate fills in and checks
// every value before transport builds it.
type Config struct {
	// IdleTimeout closes a carried connection when neither direction has
	// moved a byte for this long. Required.
	IdleTimeout time.Duration
	// LocalDialTimeout bounds the dial of a local service. Required.
	LocalDialTimeout time.Duration
	// CopyBuffer is the buffer size of a direction moving bulk data.
	// Required.
	CopyBuffer int
	// TraceSampleRate is the share, 0 to 1, of the traces this agent
	// starts for inbound connections that came without trace context (from
	// an older agent) that are sampled. Default: 0, none.
	TraceSampleRate float64
	// TrustDomain is the mesh's SPIFFE trust domain, which names the
	// destination's identity in the records of inbound connections.
	// Default: "", which leaves it unnamed.
	TrustDomain string
	// Node is this agent's node. With TrustDomain it names the source of
	// the control streams that hold and resume connections. Default: "",
	// which holds none.
	Node string
}

// Deps are the collaborators of a Proxy.
type Deps struct {
	// DialLocal dials local services. nil uses a net.Dialer.
	DialLocal func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger receives the logs. nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics. nil keeps them private.
	Registerer prometheus.Registerer
	// Observer receives a record of each connection, on both sides. nil
	// means none.
	Observer observe.Observer
	// Fault gives the Fault policy of a local service, applied to each
	// admitted connection before the service is dialled; it must not
	// block. nil, or a nil answer, injects no fault.
	Fault func(service string) *policy.Fault
	// FaultDraw returns a number in [0, 1) for each percentage a Fault
	// draws; it must be safe for concurrent use. nil uses math/rand/v2.
	FaultDraw func() float64
	// OpenControl opens a control stream to a peer agent, to hold or
	// resume a connection (tunnel.OpenControl). nil holds none.
	OpenControl func(ctx context.Context, to tunnel.Peer, hdr *wire.Header) (*tunnel.Stream, error)
}

// Recorded is a Connector that keeps the record of its connection.
// Package transport's does: it fills in the caller, the destination and
// the trace before ServeConn, and the instance, the attempts and any
// refusal in Connect. ServeConn adds the bytes and the duration, and hands
// the record to Deps.Observer.
type Recorded interface {
	tunnel.Connector
	// Record returns the connection's record; the same one each time.
	Record() *observe.Call
}

// Proxy carries TCP connections over tunnel streams.
type Proxy struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	m       *metrics
	bufPool sync.Pool // *[]byte of cfg.CopyBuffer

	conns connset.Set // TCP connections being carried, cut by Close

	nodeID   string // this node's SPIFFE ID, the source of control streams
	sessMu   sync.Mutex
	sessions map[sessionRef]*session // carried connections that can be held
	done     chan struct{}           // closed by Close
	doneOnce sync.Once
}

// New validates cfg and allocates a Proxy.
func New(cfg Config, deps Deps) (*Proxy, error) {
	if cfg.IdleTimeout <= 0 || cfg.LocalDialTimeout <= 0 || cfg.CopyBuffer <= 0 {
		return nil, fmt.Errorf("l4: IdleTimeout %s, LocalDialTimeout %s and CopyBuffer %d must be positive",
			cfg.IdleTimeout, cfg.LocalDialTimeout, cfg.CopyBuffer)
	}
	if deps.DialLocal == nil {
		d := &net.Dialer{}
		deps.DialLocal = d.DialContext
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("transport: metrics: %w", err)
	}
	if deps.Fault == nil {
		deps.Fault = func(string) *policy.Fault { return nil }
	}
	if deps.FaultDraw == nil {
		deps.FaultDraw = rand.Float64
	}
	p := &Proxy{cfg: cfg, deps: deps, log: log, m: m, sessions: map[sessionRef]*session{}, done: make(chan struct{})}
	if cfg.Node != "" && cfg.TrustDomain != "" && deps.OpenControl != nil {
		p.nodeID = spiffeid.Node(cfg.TrustDomain, cfg.Node)
	}
	p.bufPool.New = func() any { b := make([]byte, cfg.CopyBuffer); return &b }
	return p, nil
}

// ServeStream carries an admitted inbound stream to its target: it dials
// the local service within LocalDialTimeout and what is left of the
// caller's budget, answers, and splices until both directions end.
func (p *Proxy) ServeStream(ctx context.Context, in *tunnel.Inbound) {
	var o *observe.Call
	if p.deps.Observer != nil {
		o = p.inboundRecord(in)
		p.deps.Observer.Begin(o)
		defer p.endRecord(o)
	}
	if p.injectFault(ctx, in, o) {
		return
	}
	lc, r := p.dialLocal(ctx, in)
	if r != nil {
		if o != nil {
			o.MeshError = r.Code.String()
		}
		in.Refuse(*r)
		return
	}
	if !p.track(lc) {
		if o != nil {
			o.MeshError = wire.CodeShuttingDown.String()
		}
		in.Abort()
		return
	}
	defer p.untrack(lc)
	s, err := in.Accept()
	if err != nil {
		if o != nil {
			o.MeshError = reasonReset
		}
		lc.Close()
		return
	}
	p.m.inbound.Inc()
	p.m.activeIn.Inc()
	defer p.m.activeIn.Dec()
	tcp, _ := lc.(*net.TCPConn)
	var se *session
	if v, ok := in.Header.Extension(wire.ExtSession); ok {
		var id SessionID
		copy(id[:], v)
		se = p.register(id, true, in.Peer(), in.Target.Service, in.Header.Port, tcp)
	}
	toStream, fromStream, idle, _ := p.carry(ctx, lc, tcp, s, s.Release, se)
	if o != nil {
		// The caller's bytes come from the stream; the service's go to it.
		o.BytesIn, o.BytesOut = fromStream, toStream
		if idle {
			o.MeshError = ReasonIdle
		}
	}
}

// Reasons of the records of connections the mesh cut, besides the
// refusal codes of the wire status (docs/wire.md).
const (
	// ReasonIdle: nothing moved either way for IdleTimeout.
	ReasonIdle = "idle_timeout"
	// reasonReset: the stream broke as it was accepted.
	reasonReset = "stream_reset"
)

// inboundRecord starts the record of an admitted inbound stream: a
// server span, the child of the caller's client span.
func (p *Proxy) inboundRecord(in *tunnel.Inbound) *observe.Call {
	o := &observe.Call{
		Direction: observe.Inbound, Protocol: observe.TCP, Start: in.Start,
		Source: in.Target.Source.Service, SourceIdentity: in.Target.Source.ID,
		Destination: in.Target.Service, Instance: in.Target.Addr.String(), GRPCStatus: -1,
		Trace: spans.Server(in.Header.Trace, p.cfg.TraceSampleRate),
	}
	if p.cfg.TrustDomain != "" {
		o.DestinationIdentity = spiffeid.Service(p.cfg.TrustDomain, in.Target.Service)
	}
	return o
}

// endRecord stamps the record's duration and hands it to the observer.
func (p *Proxy) endRecord(o *observe.Call) {
	o.Duration = time.Since(o.Start)
	p.deps.Observer.End(o)
}

// dialLocal dials the admitted target, or returns the refusal to answer.
func (p *Proxy) dialLocal(ctx context.Context, in *tunnel.Inbound) (net.Conn, *tunnel.Refusal) {
	timeout := p.cfg.LocalDialTimeout
	if in.Header.Timeout > 0 {
		// The caller's budget was measured when it wrote the header; the
		// transit since then is small and not known without clocks.
		timeout = min(timeout, in.Header.Timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	lc, err := p.deps.DialLocal(ctx, "tcp", in.Target.Addr.String())
	cancel()
	if err != nil {
		r := dialRefusal(in.Target.Addr, err, in.Header.Timeout, time.Since(in.Start))
		return nil, &r
	}
	return lc, nil
}

// dialRefusal is the answer to a failed local dial: deadline_exceeded when
// the caller's budget ran out meanwhile, else dial_failed.
func dialRefusal(addr netip.AddrPort, err error, budget, elapsed time.Duration) tunnel.Refusal {
	code := wire.CodeDialFailed
	if budget > 0 && elapsed >= budget {
		code = wire.CodeDeadlineExceeded
	}
	return tunnel.Refusal{Code: code, Reason: fmt.Sprintf("dial %s:%d: %v", addr.Addr(), addr.Port(), trimDialErr(err))}
}

// trimDialErr drops the "dial tcp a:p:" prefix net adds to dial errors.
func trimDialErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// ServeConn carries an application's connection: it opens a stream
// through conn and splices until both directions end. When no stream can
// be had the application sees a reset, as from a refused port; conn has
// logged and counted why.
func (p *Proxy) ServeConn(ctx context.Context, c *net.TCPConn, conn tunnel.Connector) {
	var o *observe.Call
	if rc, ok := conn.(Recorded); ok && p.deps.Observer != nil {
		o = rc.Record()
		p.deps.Observer.Begin(o)
		defer p.endRecord(o)
	}
	if !p.track(c) {
		if o != nil {
			o.MeshError = wire.CodeShuttingDown.String()
		}
		return
	}
	defer p.untrack(c)
	sess := &Session{ID: newSessionID()}
	s, done, err := conn.Connect(WithSession(ctx, sess))
	if err != nil {
		c.SetLinger(0)
		c.Close()
		return
	}
	p.m.activeOut.Inc()
	var se *session
	if sess.Service != "" { // the Connector put the session in the header
		se = p.register(sess.ID, false, s.Peer(), sess.Service, sess.Port, c)
	}
	up, down, idle, _ := p.carry(ctx, c, c, s, done, se)
	p.m.activeOut.Dec()
	p.m.bytesUp.Add(float64(up))
	p.m.bytesDown.Add(float64(down))
	if o != nil {
		o.BytesIn, o.BytesOut = up, down
		if idle {
			o.MeshError = ReasonIdle
		}
	}
}

// Close cuts every connection still carried: applications see a reset,
// not an end. Later connections are closed as they come. Idempotent.
func (p *Proxy) Close() error {
	p.doneOnce.Do(func() { close(p.done) })
	p.conns.Close()
	return nil
}

func (p *Proxy) track(c io.Closer) bool { return p.conns.Add(c) }
func (p *Proxy) untrack(c io.Closer)    { p.conns.Remove(c) }
