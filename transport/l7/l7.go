// Package l7 is the per-request protocol handler of the data plane, for
// services whose ServiceDefaults protocol is http (HTTP/1.1 apps), http2 or
// grpc (h2c apps).
//
// On the calling agent, ServeConn serves an application's connection taken
// on a VIP or upstream listener: HTTP/1.1 (keep-alive, pipelining, chunked
// bodies, Expect: 100-continue, HTTP/1.0) on the connection's goroutine
// with net/http's ReadRequest and Response.Write, and HTTP/2 with prior
// knowledge (h2c, gRPC) with net/http's server.
// Each request gets its budget (Resilience timeouts, the caller's
// x-meshwork-deadline-ms or grpc-timeout), is routed and balanced by the
// connection's Router (Route rules, Split, peak-EWMA P2C fed by request
// latency), and travels on a QUIC stream of its own to the receiving
// agent, in HTTP/1.1 form after the tunnel's header, pipelined
// (docs/wire.md). Many requests of many connections share the one QUIC
// connection per peer, and none waits behind another.
//
// On the receiving agent, ServeStream reads the request from an admitted
// stream, applies the L7 intentions, then the service's Fault policy
// (fault.go: a drawn delay, a drawn abort answered by the mesh), hands the
// remaining budget to the app in x-meshwork-deadline-ms (and
// grpc-timeout), forwards the request over a
// keep-alive pool (HTTP/1.1 over a pool of its own, h2c over net/http's,
// by the service's protocol) and streams the response back, trailers
// included, ending the stream after it: an HTTP/1.1 application gets those
// bytes as they are.
//
// Bodies are streamed both ways with backpressure, never buffered whole;
// only a body of at most Config.MaxReplayBody is kept, so that a request
// refused before any answer can be tried on another instance. Upgrade
// (WebSocket) and CONNECT requests are carried as requests up to the app's
// 101 (or 2xx) answer, then as a byte stream on the same QUIC stream, as
// the per-connection path does.
//
// The mesh's own answers say so: x-meshwork-error names the reason, and
// gRPC callers get trailers-only answers with the matching grpc-status.
package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/connset"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/retrybudget"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// Config configures a Proxy. Zero values take the defaults named.
type Config struct {
	// IdleTimeout closes an application's keep-alive connection that has
	// carried no request for this long. Default: 1h.
	IdleTimeout time.Duration
	// HeaderTimeout bounds the read of a request's head, from an
	// application or from a stream. Default: 10s.
	HeaderTimeout time.Duration
	// LocalDialTimeout bounds a dial of the local app. Default: 2s.
	LocalDialTimeout time.Duration
	// MaxHeaderBytes bounds a request's or response's head. Default: 1 MiB.
	MaxHeaderBytes int
	// MaxReplayBody is the largest request body kept to try the request
	// again after a refusal; a longer body is streamed and not retried.
	// Default: 64 KiB.
	MaxReplayBody int
	// TraceSampleRate is the share, 0 to 1, of the traces this agent
	// starts (for requests that carry no traceparent) that are sampled.
	// Default: 0, none.
	TraceSampleRate float64
	// TrustDomain is the mesh's SPIFFE trust domain, which names the
	// destination's identity in the records of inbound requests. Default:
	// "", which leaves it unnamed.
	TrustDomain string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.IdleTimeout, time.Hour)
	def(&c.HeaderTimeout, 10*time.Second)
	def(&c.LocalDialTimeout, 2*time.Second)
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 1 << 20
	}
	if c.MaxReplayBody <= 0 {
		c.MaxReplayBody = 64 << 10
	}
}

// Router opens the stream of one request. Package transport implements it
// for each application connection: the Connector passed to ServeConn must
// also be a Router.
type Router interface {
	// Destination is the service the application connected to.
	Destination() string
	// Open routes req (the destination's Route rules, then a Split), picks
	// an instance by balancing, skipping those in avoid when others are
	// left, and opens a pipelined stream to it carrying a header with
	// trace and with ctx's deadline as the budget. It fails with an error
	// wrapping tunnel.ErrNoInstance when no instance may take it.
	Open(ctx context.Context, req policy.Request, trace wire.TraceContext, avoid []string) (*Attempt, error)
	// Describe fills in what the connection knows of each of its
	// requests' records: Source, SourceIdentity, Destination and
	// DestinationIdentity. It must not block or allocate.
	Describe(c *observe.Call)
}

// Attempt is one try of a request on one instance.
type Attempt struct {
	// Stream carries the request; its status comes first in the answer.
	Stream *tunnel.Stream
	// Instance names the instance, for Router.Open's avoid.
	Instance string
	// Route names the Route rule that chose the instance's split; "" for
	// the destination's default split.
	Route string
	// Latency, when set, gives the instance's p95 request latency, which
	// times a hedge; ok is false while too few requests were measured.
	Latency LatencySource
	// Done ends the try: it feeds latency (request written to response
	// head) to the balancer, counts a failure when failed, and releases
	// the stream. Call it once.
	Done func(latency time.Duration, failed bool)
}

// LatencySource gives an instance's recent request latency. It must not
// block; balance.Endpoint implements it.
type LatencySource interface {
	// P95 is the 95th percentile; ok is false while too few requests
	// were measured.
	P95() (p95 time.Duration, ok bool)
}

// RequestAuthorizer applies intentions per request on the receiving agent.
type RequestAuthorizer interface {
	// AllowedRequest decides a request of src to the local service dst and
	// gives a reason fit for a log line and a 403 body. It must not block.
	AllowedRequest(src tunnel.Source, dst string, req policy.Request) (bool, string)
}

// Deps are the collaborators of a Proxy.
type Deps struct {
	// Resilience gives the settings for calls to a service; it must not
	// block. nil applies policy.DefaultResilience.
	Resilience func(service string) *policy.Resilience
	// Breakers are the circuit breakers of destinations: each request
	// holds one of its destination's max_requests until its answer is
	// relayed. nil bounds nothing.
	Breakers *breaker.Set
	// RouteOptions gives the retry options of the Route rule a request
	// to service matches (retry_non_idempotent, hedge); it must not
	// block. nil marks no request.
	RouteOptions func(service string, req policy.Request) policy.RouteOptions
	// Budgets holds the retry budgets of the destination services, which
	// the Router's connect retries draw from too. nil keeps a private set.
	Budgets *retrybudget.Set
	// Protocol gives a local service's protocol ("http", "http2", "grpc"),
	// which decides how the app is spoken to. nil means "http".
	Protocol func(service string) policy.Protocol
	// Authorizer decides requests. nil allows every request that the
	// tunnel admitted.
	Authorizer RequestAuthorizer
	// Fault gives the Fault policy of a local service, applied to each
	// authorized request before it reaches the app; it must not block.
	// nil, or a nil answer, injects no fault.
	Fault func(service string) *policy.Fault
	// FaultDraw returns a number in [0, 1) for each percentage a Fault
	// draws; it must be safe for concurrent use. nil uses math/rand/v2.
	// Tests inject a seeded source.
	FaultDraw func() float64
	// DialLocal dials local apps. nil uses a net.Dialer.
	DialLocal func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger receives the logs. nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics. nil keeps them private.
	Registerer prometheus.Registerer
	// Observer receives a record of each request, on both sides. nil
	// means none.
	Observer observe.Observer
}

// Proxy carries HTTP requests over tunnel streams. It implements
// transport's Handler.
type Proxy struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	m    *metrics

	budgets *retrybudget.Set // per destination service

	srv *http.Server  // serves applications' connections
	ln  *connListener // hands ServeConn's connections to srv

	h1 *h1Pool         // keep-alive HTTP/1.1 connections to local apps
	h2 *http.Transport // h2c connections to local apps

	conns connset.Set // applications' connections, cut by Close

	readers sync.Pool // *bufio.Reader
	writers sync.Pool // *bufio.Writer
	bufs    sync.Pool // *[]byte of copyBuffer
	records sync.Pool // *inboundRecord
	names   recordNames
}

// copyBuffer is the buffer of a body copy.
const copyBuffer = 32 << 10

// New allocates a Proxy and starts its HTTP server.
func New(cfg Config, deps Deps) (*Proxy, error) {
	cfg.setDefaults()
	if deps.DialLocal == nil {
		d := &net.Dialer{}
		deps.DialLocal = d.DialContext
	}
	if deps.Resilience == nil {
		deps.Resilience = func(string) *policy.Resilience { return &policy.DefaultResilience }
	}
	if deps.RouteOptions == nil {
		deps.RouteOptions = func(string, policy.Request) policy.RouteOptions { return policy.RouteOptions{} }
	}
	if deps.Protocol == nil {
		deps.Protocol = func(string) policy.Protocol { return policy.ProtocolHTTP }
	}
	if deps.Fault == nil {
		deps.Fault = func(string) *policy.Fault { return nil }
	}
	if deps.FaultDraw == nil {
		// Not seeded, so that agents do not draw in step.
		deps.FaultDraw = rand.Float64
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
		return nil, fmt.Errorf("l7: metrics: %w", err)
	}
	budgets := deps.Budgets
	if budgets == nil {
		if budgets, err = retrybudget.NewSet(nil, nil); err != nil {
			return nil, fmt.Errorf("l7: retry budgets: %w", err)
		}
	}
	p := &Proxy{cfg: cfg, deps: deps, log: log.With("component", "l7"), m: m, budgets: budgets}
	p.readers.New = func() any { return bufio.NewReaderSize(nil, 8<<10) }
	p.writers.New = func() any { return bufio.NewWriterSize(nil, 8<<10) }
	p.bufs.New = func() any { b := make([]byte, copyBuffer); return &b }
	p.records.New = func() any { return new(inboundRecord) }
	p.names = recordNames{ids: map[string]string{}, addrs: map[netip.AddrPort]string{}}
	p.h1, p.h2 = newH1Pool(p), p.appTransport()

	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	p.ln = newConnListener()
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serveApp),
		Protocols:         &protos,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, appConnKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	go p.srv.Serve(p.ln) //nolint:errcheck // returns once Close closes ln
	return p, nil
}

// appTransport is a pool of h2c connections to local apps.
func (p *Proxy) appTransport() *http.Transport {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	dial := p.deps.DialLocal
	timeout := p.cfg.LocalDialTimeout
	return &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return dial(ctx, network, addr)
		},
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: int64(p.cfg.MaxHeaderBytes),
	}
}

// Close stops serving applications' connections, cutting those in
// progress, and closes the pools to local apps. Streams in progress end
// with their QUIC connections. Idempotent.
func (p *Proxy) Close() error {
	p.ln.Close()
	err := p.srv.Close()
	p.conns.Close()
	p.h1.close()
	p.h2.CloseIdleConnections()
	return err
}

// getReader returns a pooled reader over r.
func (p *Proxy) getReader(r io.Reader) *bufio.Reader {
	br := p.readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func (p *Proxy) putReader(br *bufio.Reader) {
	br.Reset(nil)
	p.readers.Put(br)
}

func (p *Proxy) getWriter(w io.Writer) *bufio.Writer {
	bw := p.writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func (p *Proxy) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	p.writers.Put(bw)
}
