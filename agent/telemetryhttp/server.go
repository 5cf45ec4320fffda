// Package telemetryhttp is the agent's telemetry listener (telemetry.listen):
// a listener and a handler of their own, apart from the API, that serve
// only what a monitoring system reads, with no token, so that it is safe to
// open on the host's address to a Prometheus or a load balancer:
//
//	GET /metrics   the agent's whole registry, as GET /v1/metrics on the API;
//	               Prometheus text, OpenMetrics or protobuf by the Accept
//	               header (protobuf carries native histograms)
//	GET /healthz   200 while the process serves: liveness
//	GET /readyz    200 when every readiness check passes, else 503; the
//	               body (api.Readiness) names each check, ok or not, and why
//
// HEAD is answered as GET without a body. Any other path is 404, any other
// method 405, both in the API's JSON error shape. The server bounds how
// long a client may take to send its request and to read the answer, and
// how many scrapes run at once, so that a slow or hostile client on the
// network holds no more than a few goroutines.
package telemetryhttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// Paths served.
const (
	PathMetrics = "/metrics"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// Limits of the server. A scrape of the whole registry takes milliseconds;
// these leave room for a loaded host and none for a client that trickles.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// gatherTimeout bounds one scrape's gathering, under writeTimeout.
	gatherTimeout = 20 * time.Second
	// maxScrapes is how many scrapes run at once; more are answered 503.
	maxScrapes    = 8
	shutdownGrace = 2 * time.Second
)

// ErrStarted is returned by Start when the server was already started or
// has been closed.
var ErrStarted = errors.New("telemetryhttp: already started or closed")

// Config configures the server.
type Config struct {
	// Addr is host:port where Start listens when Deps.Listener is nil
	// (telemetry.listen). Required then.
	Addr string
}

// Deps are the server's collaborators.
type Deps struct {
	// Listener is served by Start, which then owns it. Default: Start
	// listens on Config.Addr.
	Listener net.Listener
	// Listen opens the listener on Config.Addr when Listener is nil, such
	// as one the agent's previous process handed over (internal/sockets).
	// Default: a new socket.
	Listen func(network, addr string) (net.Listener, error)
	// Gatherer is exposed on /metrics. Required.
	Gatherer prometheus.Gatherer
	// Ready reports the agent's readiness for /readyz. Required; it must
	// not block and must be safe for concurrent use.
	Ready func() api.Readiness
	// Logger. Default: discards.
	Logger *slog.Logger
}

// Server is the telemetry listener. New, then Start; Close stops it.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	handler http.Handler

	mu        sync.Mutex
	started   bool
	closed    bool
	srv       *http.Server
	listener  net.Listener
	serveDone chan struct{}
}

// New validates its arguments. It opens no socket.
func New(cfg Config, deps Deps) (*Server, error) {
	switch {
	case deps.Gatherer == nil:
		return nil, errors.New("telemetryhttp: deps: gatherer is nil")
	case deps.Ready == nil:
		return nil, errors.New("telemetryhttp: deps: ready is nil")
	case deps.Listener == nil && cfg.Addr == "":
		return nil, errors.New("telemetryhttp: config: addr is empty and no listener was given")
	}
	if deps.Listener == nil {
		if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
			return nil, fmt.Errorf("telemetryhttp: config: addr %q: %w", cfg.Addr, err)
		}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger}
	s.handler = s.newHandler()
	return s, nil
}

// Handler returns what the server serves, for tests and for callers that
// serve it themselves.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) newHandler() http.Handler {
	metrics := promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		// OpenMetrics when the scraper asks for it; the protobuf format,
		// which carries native histograms, is negotiated either way.
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: maxScrapes,
		Timeout:             gatherTimeout,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h http.Handler
		switch r.URL.Path {
		case PathMetrics:
			h = metrics
		case PathHealthz:
			h = http.HandlerFunc(healthz)
		case PathReadyz:
			h = http.HandlerFunc(s.readyz)
		default:
			httpjson.CodedError(w, http.StatusNotFound, httpjson.CodeUnknownEndpoint,
				fmt.Errorf("no such path %q: the telemetry listener serves only %s, %s and %s", r.URL.Path, PathMetrics, PathHealthz, PathReadyz))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpjson.CodedError(w, http.StatusMethodNotAllowed, httpjson.CodeMethodNotAllowed,
				fmt.Errorf("method %s not allowed on %s: use GET", r.Method, r.URL.Path))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// healthz answers while the process serves HTTP: it checks nothing else,
// so that a restart is never asked for because of the cluster's state.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	r := s.deps.Ready()
	status := http.StatusOK
	if !r.Ready {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	httpjson.Write(w, status, r)
}

// Start listens (unless a listener was injected) and serves in a
// goroutine. It returns once the listener is bound. ctx bounds only the
// listening.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return ErrStarted
	}
	l := s.deps.Listener
	listen := s.deps.Listen
	if listen == nil {
		listen = func(network, addr string) (net.Listener, error) {
			var lc net.ListenConfig
			return lc.Listen(ctx, network, addr)
		}
	}
	if l == nil {
		var err error
		if l, err = listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("telemetryhttp: start: %w", err)
		}
	}
	s.started = true
	s.listener = l
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("telemetry listener stopped serving", "err", err)
		}
	}()
	s.log.Info("telemetry listener listening", "addr", l.Addr().String())
	return nil
}

// Addr returns the address served, or nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// Close lets requests in flight finish for up to 2 seconds, closes the
// listener and waits for the serving goroutine. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, done := s.srv, s.serveDone
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
	<-done
	return nil
}
