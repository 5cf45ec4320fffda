// Package tracing exports the mesh's calls as OpenTelemetry spans over
// OTLP/HTTP: an observe.Observer that turns each sampled Call into a
// client span (outbound) or a server span (inbound) with the trace IDs
// the data plane propagated, so that the spans of every agent a request
// passes, and of the applications that read the traceparent header, join
// one trace.
//
// The data path never waits for the receiver: End copies a sampled call
// into a bounded queue and returns; one goroutine batches the queue and
// exports. A call that finds the queue full is dropped and counted.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.38.0"

	"github.com/meshwork/meshwork/transport/observe"
)

// Defaults of Config, as the OpenTelemetry SDK's batch span processor
// has them: a receiver sees few, full requests.
const (
	DefaultQueueSize     = 2048
	DefaultBatchSize     = 512
	DefaultFlushInterval = 5 * time.Second
	DefaultExportTimeout = 30 * time.Second
)

// TracesPath is the path an Endpoint without one is given: the OTLP/HTTP
// standard path of traces.
const TracesPath = "/v1/traces"

// ErrInvalidConfig is wrapped by New's errors about its Config.
var ErrInvalidConfig = errors.New("invalid tracing config")

// ErrStarted is returned by Start when the exporter was started or closed
// before.
var ErrStarted = errors.New("exporter already started or closed")

// Config configures an Exporter.
type Config struct {
	// Endpoint is the URL of an OTLP/HTTP trace receiver
	// (telemetry.tracing.otlp_endpoint), http or https. A URL without a
	// path, such as http://127.0.0.1:4318, is sent to TracesPath; one
	// with a path is used as it is. Required.
	Endpoint string
	// QueueSize bounds the spans waiting for export. Default: 2048.
	QueueSize int
	// Node is the agent's node name, the resource's meshwork.node.
	// Required.
	Node string
	// Version is the agent's version, the resource's service.version.
	// Default: none.
	Version string
	// BatchSize is the most spans sent in one request. Default: 512.
	BatchSize int
	// FlushInterval is the longest a span waits for its batch to fill.
	// Default: 5s.
	FlushInterval time.Duration
	// ExportTimeout bounds one batch's export, its retries included; the
	// queue fills meanwhile. Default: 30s.
	ExportTimeout time.Duration
}

// withDefaults returns cfg with its zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.ExportTimeout == 0 {
		cfg.ExportTimeout = DefaultExportTimeout
	}
	return cfg
}

// validate checks cfg (with its defaults) and returns the URL spans are
// sent to.
func (cfg Config) validate() (string, error) {
	bad := func(field, format string, args ...any) (string, error) {
		return "", fmt.Errorf("tracing: %w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("endpoint", "%q is not an http:// or https:// URL", cfg.Endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = TracesPath
	}
	switch {
	case cfg.Node == "":
		return bad("node", "empty")
	case cfg.QueueSize < 1:
		return bad("queue_size", "%d must be at least 1", cfg.QueueSize)
	case cfg.BatchSize < 1:
		return bad("batch_size", "%d must be at least 1", cfg.BatchSize)
	case cfg.FlushInterval < 0:
		return bad("flush_interval", "%s is negative", cfg.FlushInterval)
	case cfg.ExportTimeout < 0:
		return bad("export_timeout", "%s is negative", cfg.ExportTimeout)
	}
	return u.String(), nil
}

// Exporter is an observe.Observer that exports sampled calls as spans.
// Its life: New, Start, then End from any number of goroutines, then
// Close.
type Exporter struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	client sdktrace.SpanExporter
	scope  instrumentation.Scope
	queue  chan observe.Call
	closed atomic.Bool  // read by End; set under lifecycle
	unsent atomic.Int64 // spans dropped as closed by the export goroutine

	lifecycle sync.Mutex // orders Start and Close
	started   bool

	stop      chan struct{} // closed by Close: flush and return
	done      chan struct{} // closed by the export goroutine as it returns
	runCtx    context.Context
	cancelRun context.CancelFunc // ends exports in flight when Close's deadline passes
	closeOnce sync.Once
	closeErr  error

	// Of the export goroutine only.
	resources map[resourceKey]*sdkresource.Resource
	failing   bool
}

var _ observe.Observer = (*Exporter)(nil)

// New validates cfg and builds an Exporter that sends to cfg.Endpoint,
// with its metrics registered on reg. It opens no connection and starts
// no goroutine: Start does. Calls that end before Start wait in the
// queue, up to its bound.
//
// The OTLP exporter also reads the OTEL_EXPORTER_OTLP_* environment
// variables, all but the endpoint: headers (for a token), TLS
// certificates, compression.
func New(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Exporter, error) {
	cfg = cfg.withDefaults()
	endpoint, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	client := otlptracehttp.NewUnstarted(
		otlptracehttp.WithEndpointURL(endpoint),
		// Retries of one batch stay within ExportTimeout: a receiver that
		// restarts loses no span; one that is down fills the queue, and
		// later spans are dropped and counted.
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{
			Enabled:         true,
			InitialInterval: time.Second,
			MaxInterval:     5 * time.Second,
			MaxElapsedTime:  cfg.ExportTimeout,
		}),
	)
	return newExporter(cfg, client, reg, log)
}

// newExporter builds an Exporter over any span exporter.
func newExporter(cfg Config, client sdktrace.SpanExporter, reg prometheus.Registerer, log *slog.Logger) (*Exporter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Exporter{
		cfg:       cfg,
		log:       log,
		client:    client,
		scope:     scope(cfg.Version),
		queue:     make(chan observe.Call, cfg.QueueSize),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		resources: make(map[resourceKey]*sdkresource.Resource),
	}
	e.runCtx, e.cancelRun = context.WithCancel(context.Background())
	m, err := newMetrics(reg, func() float64 { return float64(len(e.queue)) })
	if err != nil {
		return nil, fmt.Errorf("tracing: register metrics: %w", err)
	}
	e.m = m
	return e, nil
}

// Start starts the export goroutine. It returns at once: the receiver is
// first reached by the first batch.
func (e *Exporter) Start(ctx context.Context) error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	if e.closed.Load() || e.started {
		return fmt.Errorf("tracing: start: %w", ErrStarted)
	}
	if s, ok := e.client.(interface{ Start(context.Context) error }); ok {
		if err := s.Start(ctx); err != nil {
			return fmt.Errorf("tracing: start: %w", err)
		}
	}
	e.started = true
	go e.run()
	return nil
}

// Begin does nothing: a span is exported whole, at its end.
func (e *Exporter) Begin(*observe.Call) {}

// End queues a sampled call for export, or counts it as dropped when the
// queue is full. It never blocks, and keeps no pointer into c: the call
// is copied.
func (e *Exporter) End(c *observe.Call) {
	if !c.Trace.Sampled {
		return
	}
	if e.closed.Load() {
		e.m.closed.Inc()
		return
	}
	select {
	case e.queue <- *c:
	default:
		e.m.queueFull.Inc()
	}
}

// Close stops taking calls, exports those queued, and returns when they
// are sent or when ctx ends; the spans not sent by then are dropped and
// counted, and the error says how many. It is idempotent: a second call
// returns the first's error.
func (e *Exporter) Close(ctx context.Context) error {
	e.closeOnce.Do(func() {
		e.lifecycle.Lock()
		e.closed.Store(true)
		started := e.started
		e.lifecycle.Unlock()
		if !started {
			// No goroutine: what was queued before Start is lost.
			if n := len(e.queue); n > 0 {
				e.m.closed.Add(float64(n))
				e.closeErr = fmt.Errorf("tracing: close: %d spans dropped: never started", n)
			}
			e.cancelRun()
			return
		}
		close(e.stop)
		select {
		case <-e.done:
		case <-ctx.Done():
			e.cancelRun() // the export in flight fails and is counted
			<-e.done
		}
		// Calls that ended while the queue was drained.
		if n := len(e.queue); n > 0 {
			e.m.closed.Add(float64(n))
		}
		e.cancelRun()
		if err := e.client.Shutdown(context.WithoutCancel(ctx)); err != nil {
			e.log.Debug("trace exporter shutdown failed", "err", err)
		}
		if n := e.unsent.Load(); n > 0 {
			e.closeErr = fmt.Errorf("tracing: close: %d spans unsent: %w", n, context.Cause(ctx))
		}
	})
	return e.closeErr
}

// run is the export goroutine: it batches the queue and exports each
// batch when it is full or FlushInterval has passed. On Close it drains
// the queue.
func (e *Exporter) run() {
	defer close(e.done)
	ticker := time.NewTicker(e.cfg.FlushInterval)
	defer ticker.Stop()
	batch := make([]sdktrace.ReadOnlySpan, 0, e.cfg.BatchSize)
	flush := func() {
		if len(batch) > 0 {
			e.export(batch)
			clear(batch)
			batch = batch[:0]
		}
	}
	add := func(c *observe.Call) {
		batch = append(batch, spanOf(c, e.resource(c), e.scope).Snapshot())
		if len(batch) >= e.cfg.BatchSize {
			flush()
		}
	}
	for {
		select {
		case c := <-e.queue:
			add(&c)
		case <-ticker.C:
			flush()
		case <-e.stop:
			for {
				select {
				case c := <-e.queue:
					add(&c)
				default:
					flush()
					return
				}
			}
		}
	}
}

// export sends one batch and counts the outcome. Once Close's deadline
// has passed, the rest is counted as dropped without trying.
func (e *Exporter) export(batch []sdktrace.ReadOnlySpan) {
	n := float64(len(batch))
	if e.runCtx.Err() != nil {
		e.m.closed.Add(n)
		e.unsent.Add(int64(len(batch)))
		return
	}
	err := e.client.ExportSpans(e.runCtx, batch)
	switch {
	case err == nil:
		e.m.exported.Add(n)
		if e.failing {
			e.failing = false
			e.log.Info("trace export recovered", "endpoint", e.cfg.Endpoint)
		}
	case e.runCtx.Err() != nil:
		e.m.closed.Add(n)
		e.unsent.Add(int64(len(batch)))
	default:
		e.m.exportErrors.Inc()
		e.m.exportFailed.Add(n)
		// Logged once per outage, not per batch: the counters tell the rest.
		if !e.failing {
			e.failing = true
			e.log.Warn("trace export failed", "endpoint", e.cfg.Endpoint, "spans", len(batch), "err", err)
		}
	}
}

// resourceKey is what a span's resource depends on.
type resourceKey struct {
	service string
}

// maxResources bounds the cached resources. An agent acts for its own
// services, a handful; past the bound a resource is built per span.
const maxResources = 1024

// resource is the resource of a call's span: the agent (service.name
// "meshwork", its node) acting for a local service: the caller on the
// outbound side, the callee on the inbound side.
func (e *Exporter) resource(c *observe.Call) *sdkresource.Resource {
	k := resourceKey{service: c.Source}
	if c.Direction == observe.Inbound {
		k.service = c.Destination
	}
	if r, ok := e.resources[k]; ok {
		return r
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(ServiceName), AttrNode.String(e.cfg.Node), AttrService.String(k.service)}
	if e.cfg.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(e.cfg.Version))
	}
	r := sdkresource.NewWithAttributes(SchemaURL, attrs...)
	if len(e.resources) < maxResources {
		e.resources[k] = r
	}
	return r
}

// scope is the instrumentation scope of the spans.
func scope(version string) instrumentation.Scope {
	return instrumentation.Scope{Name: scopeName, Version: version, SchemaURL: SchemaURL}
}
