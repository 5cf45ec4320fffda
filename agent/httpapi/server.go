// Package httpapi is the agent's local HTTP API: JSON on 127.0.0.1:8500 by
// default, read by the CLI (through package api) and by tools such as
// meshwork-k8s-sync. It serves the agent's own services and checks, the
// gossip members, the catalog with blocking queries, and Prometheus
// metrics. Other components add their routes with Mount.
//
// Endpoints, and what each requires of the caller's ACL token (api/openapi.yaml
// describes every route the agent mounts, with the other components' own, and
// a test holds it to them):
//
//	GET  /v1/agent/self                     api.Self                      agent:read
//	GET  /v1/agent/members                  []api.Member                  node:read, filtered
//	GET  /v1/agent/services                 []api.AgentService            service:read, filtered
//	GET  /v1/agent/service/<id>             api.AgentService              service:read on its name
//	PUT  /v1/agent/service/register         body api.ServiceDefinition; answers api.AgentService
//	                                                                      service:write on its name
//	PUT  /v1/agent/service/deregister/<id>                                service:write on its name
//	GET  /v1/agent/checks                   []api.CheckStatus             service:read (node:read), filtered
//	PUT  /v1/agent/check/{pass,warn,fail}/<id>?note=...                   service:write (node:write)
//	PUT  /v1/agent/check/update/<id>        body api.CheckUpdate          service:write (node:write)
//	GET  /v1/catalog/services               []api.CatalogServiceSummary   service:read, filtered (blocking)
//	GET  /v1/catalog/nodes                  []api.Node                    node:read, filtered (blocking)
//	GET  /v1/catalog/service/<name>?tag=    []api.CatalogServiceEntry     service:read on <name> (blocking)
//	GET  /v1/health/service/<name>?passing&tag=  []api.HealthServiceEntry service:read on <name> (blocking)
//	GET  /v1/agent/maintenance              api.MaintenanceStatus         node:read (the node's), service:read (each service's), filtered
//	PUT  /v1/agent/maintenance?enable=true|false&reason=...               node:write on this node
//	PUT  /v1/agent/service/maintenance/<id>?enable=true|false&reason=...  service:write on the service the ID names
//	PUT  /v1/agent/leave                                                  agent:write
//	PUT  /v1/agent/force-leave/<node>                                     node:write on <node>
//	GET  /v1/agent/monitor?loglevel=info    text/plain, streamed         agent:read
//	GET  /v1/metrics                        Prometheus text format        agent:read
//
// Blocking reads take ?index=N&wait=30s and answer X-Meshwork-Index.
//
// Every error answer, of every route, mounted or not, is one JSON shape
// (httpjson.ErrorBody): {"error": "...", "code": "..."} with a code from
// httpjson.Codes; an unknown path is 404 "unknown_endpoint", a known path
// with another method 405 "method_not_allowed" with Allow. A route mounted
// with an httpjson.Deprecated handler is an alias kept for old clients: its
// answers carry a Deprecation header, and its first call is logged and every
// call counted (meshwork_http_deprecated_requests_total).
//
// # Access control
//
// Every route declares what it requires when it is mounted (Mount takes an
// acl.Requirement), so that no route is open by omission. A middleware
// resolves the request's token (X-Meshwork-Token or Authorization: Bearer;
// none is the anonymous token) with the acl.Resolver, refuses what the
// requirement does not allow, and puts the token's authorizer in the
// request's context (acl.FromContext), where handlers make the checks that
// depend on the body or on what they find, and filter lists. A refusal is
// 403 with {"error": ..., "code": "permission_denied"} (or
// "acl_not_found" for an unknown or expired token); it is logged with the
// token's accessor ID and counted. With ACLs disabled (no resolver, or
// acl.enabled false) nothing is checked and tokens are not looked at.
//
// The server depends only on small interfaces (Local, Catalog, Members) so
// that it can be tested, and composed, without an agent.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/httpjson"
	"github.com/meshwork/meshwork/internal/logstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Defaults of Config.
const (
	DefaultAddr        = "127.0.0.1:8500"
	DefaultWait        = api.DefaultBlockingWait // clients count on it (api.Client's timeout)
	DefaultMaxWait     = api.MaxBlockingWait
	DefaultVersion     = "0.0.0-dev"
	DefaultCommit      = "unknown"
	shutdownGrace      = 5 * time.Second
	readHeaderTimeout  = 10 * time.Second
	DefaultBodyTimeout = 30 * time.Second
	idleTimeout        = 90 * time.Second
	unmatchedRouteName = "unmatched"
)

// ErrStarted is returned by Start when the server was already started.
var ErrStarted = errors.New("httpapi: already started")

// Local is the agent's local state (agent/local.Manager implements it).
// Methods are safe for concurrent use and do not block on the network.
type Local interface {
	NodeName() string
	NodeInfo() local.NodeInfo
	Services() []api.AgentService
	Service(id string) (api.AgentService, bool)
	// Register errors match api.ErrInvalid for a bad definition.
	Register(def api.ServiceDefinition) error
	// Deregister errors match local.ErrServiceNotFound for an unknown id.
	Deregister(id string) error
	Checks() []api.CheckStatus
	// UpdateTTL errors match local.ErrCheckNotFound, local.ErrNotTTL or
	// local.ErrBadStatus.
	UpdateTTL(checkID, status, output string) error
	// SetNodeMaintenance and SetServiceMaintenance errors match
	// local.ErrBadReason, and local.ErrServiceNotFound for an unknown id.
	SetNodeMaintenance(on bool, reason string) error
	SetServiceMaintenance(id string, on bool, reason string) error
	Maintenance() api.MaintenanceStatus
}

// Catalog is the catalog store (catalog.Store implements it). Current never
// blocks; Wait blocks until the index passes index or ctx ends.
type Catalog interface {
	Current() *catalog.Snapshot
	Wait(ctx context.Context, index uint64) (*catalog.Snapshot, error)
}

// Members lists the nodes the gossip layer knows. It must be safe for
// concurrent use and must not block.
type Members interface {
	Members() []api.Member
}

// MembersFunc adapts a function to Members.
type MembersFunc func() []api.Member

// Members calls f.
func (f MembersFunc) Members() []api.Member { return f() }

// Config configures the server.
type Config struct {
	// Addr is where Start listens when Deps.Listener is nil.
	// Default: 127.0.0.1:8500.
	Addr string
	// Version is the binary's semantic version, reported by /v1/agent/self.
	// Default: "0.0.0-dev".
	Version string
	// Commit is the git commit the binary was built from, reported by
	// /v1/agent/self. Default: "unknown".
	Commit string
	// DefaultWait is a blocking query's wait when it gives none. Default: 5m.
	DefaultWait time.Duration
	// MaxWait caps a blocking query's wait. Default: 10m.
	MaxWait time.Duration
	// BodyTimeout bounds how long a client may take to send a request
	// body once its headers have arrived: a body that trickles in would
	// hold a goroutine and a connection for as long as the client likes.
	// Default: 30s.
	BodyTimeout time.Duration
}

// Validate checks the config; errors name the field and the value.
func (c *Config) Validate() error {
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return fmt.Errorf("httpapi: config: addr %q: %w", c.Addr, err)
		}
	}
	if c.DefaultWait < 0 {
		return fmt.Errorf("httpapi: config: default_wait %s must not be negative", c.DefaultWait)
	}
	if c.MaxWait < 0 {
		return fmt.Errorf("httpapi: config: max_wait %s must not be negative", c.MaxWait)
	}
	if c.BodyTimeout < 0 {
		return fmt.Errorf("httpapi: config: body_timeout %s must not be negative", c.BodyTimeout)
	}
	if c.MaxWait > 0 && c.DefaultWait > c.MaxWait {
		return fmt.Errorf("httpapi: config: default_wait %s is above max_wait %s", c.DefaultWait, c.MaxWait)
	}
	return nil
}

// Deps are the server's collaborators.
type Deps struct {
	// Listener is served by Start, which then owns it. Default: Start
	// listens on Config.Addr.
	Listener net.Listener
	// Listen opens the listener on Config.Addr when Listener is nil, such
	// as one inherited from the previous agent (internal/sockets). Default:
	// a new TCP listener.
	Listen func(network, addr string) (net.Listener, error)
	// Local is this node's services and checks. Required.
	Local Local
	// Catalog is the catalog store. Required.
	Catalog Catalog
	// Members lists the gossip members. Default: the catalog's members,
	// without gossip ports.
	Members Members
	// Gatherer is exposed on /v1/metrics. Required.
	Gatherer prometheus.Gatherer
	// Registerer receives the API's own metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger. Default: discards.
	Logger *slog.Logger
	// ACL resolves the tokens of requests. Default: none, ACLs disabled.
	ACL *acl.Resolver
	// Membership leaves the cluster, and forces failed nodes out.
	// Default: none, and the leave and force-leave routes are not mounted.
	Membership Membership
	// Logs streams the agent's log to GET /v1/agent/monitor. Default:
	// none, and the route is not mounted.
	Logs LogSource
}

// Membership is the agent's own membership. Leave may block for as long
// as ctx allows; ForceLeave does not block on the network.
type Membership interface {
	// Leave leaves the cluster gracefully, within ctx's deadline or a
	// bound of its own; the agent stops once it returns, after the
	// answer is sent.
	Leave(ctx context.Context) error
	// ForceLeave marks a failed node as left. Errors match
	// gossip.ErrUnknownMember or gossip.ErrMemberAlive.
	ForceLeave(node string) error
}

// LogSource is where the agent's log lines can be followed
// (logstream.Broker implements it). Subscribe must not block.
type LogSource interface {
	Subscribe(level slog.Level, buffer int) *logstream.Subscription
}

// Server is the local HTTP API. Create it with New, add routes with Mount,
// then Start; Close stops it.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics
	mux     *http.ServeMux

	routesMu sync.RWMutex
	routes   map[string]Route // by pattern, the metric label of a matched request

	baseCtx    context.Context
	cancelBase context.CancelFunc

	mu        sync.Mutex
	started   bool
	closed    bool
	srv       *http.Server
	listener  net.Listener
	fresh     freshConns // accepted, first request not read (StopAccepting)
	serveDone chan struct{}
}

// New validates its arguments and registers the routes. It opens no socket.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Version == "" {
		cfg.Version = DefaultVersion
	}
	if cfg.Commit == "" {
		cfg.Commit = DefaultCommit
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.DefaultWait == 0 {
		cfg.DefaultWait = min(DefaultWait, cfg.MaxWait)
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	switch {
	case deps.Local == nil:
		return nil, errors.New("httpapi: deps: local is nil")
	case deps.Catalog == nil:
		return nil, errors.New("httpapi: deps: catalog is nil")
	case deps.Gatherer == nil:
		return nil, errors.New("httpapi: deps: gatherer is nil")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.ACL == nil {
		r, err := acl.NewResolver(acl.Config{}, acl.Deps{Store: acl.NewMemStore()})
		if err != nil {
			return nil, fmt.Errorf("httpapi: %w", err)
		}
		deps.ACL = r
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		deps:    deps,
		log:     deps.Logger,
		metrics: met,
		mux:     http.NewServeMux(),
		routes:  map[string]Route{},
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.routesInit()
	return s, nil
}

// Mount adds a route served by h, with a net/http pattern such as
// "GET /v1/operator/raft/peers", and what it requires of the caller's ACL
// token (see the package comment). It may be called before or after
// Start. Mounted routes share the JSON 404/405 answers, the request
// metrics and the access control. A pattern that is malformed or conflicts
// with another, or a requirement that is incomplete, is an error. Mount is
// an acl.MountFunc. An httpjson.Deprecated handler mounts a deprecated
// alias (see the package comment).
func (s *Server) Mount(pattern string, need acl.Requirement, h http.Handler) (err error) {
	if err := need.Validate(); err != nil {
		return fmt.Errorf("httpapi: mount %q: %w", pattern, err)
	}
	defer func() {
		// ServeMux reports bad and conflicting patterns by panicking.
		if r := recover(); r != nil {
			err = fmt.Errorf("httpapi: mount %q: %v", pattern, r)
		}
	}()
	route := Route{Pattern: pattern, Need: need}
	served := s.guard(pattern, need, h)
	if d, ok := h.(httpjson.Deprecated); ok {
		route.Successor = d.Successor
		served = s.deprecated(route, served)
	}
	s.mux.Handle(pattern, served)
	s.routesMu.Lock()
	s.routes[pattern] = route
	s.routesMu.Unlock()
	return nil
}

// deprecated serves a deprecated alias: it marks every answer, refusals
// included, counts the calls, and logs the first, so that an operator
// learns that something still calls it without a line per call.
func (s *Server) deprecated(route Route, h http.Handler) http.Handler {
	var once sync.Once
	calls := s.metrics.deprecated.WithLabelValues(route.Pattern)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpjson.MarkDeprecated(w.Header())
		calls.Inc()
		once.Do(func() {
			s.log.Warn("deprecated api route called", "route", route.Pattern, "successor", route.Successor,
				"remote", r.RemoteAddr, "user_agent", r.UserAgent())
		})
		h.ServeHTTP(w, r)
	})
}

var _ acl.MountFunc = (*Server)(nil).Mount

func (s *Server) handle(pattern string, need acl.Requirement, h http.HandlerFunc) {
	if err := s.Mount(pattern, need, h); err != nil {
		panic(err) // our own routes; a conflict is a programming error
	}
}

// Route is one mounted route.
type Route struct {
	// Pattern is the net/http pattern, with its method.
	Pattern string
	// Need is what it requires of the caller's token.
	Need acl.Requirement
	// Successor is, for a deprecated alias, the route that replaces it
	// ("PUT /v1/ca/token"); "" for the others.
	Successor string
}

// Routes returns every mounted route, by pattern: what the API serves, for
// the tests that hold the ACLs and api/openapi.yaml to it.
func (s *Server) Routes() []Route {
	s.routesMu.RLock()
	defer s.routesMu.RUnlock()
	out := make([]Route, 0, len(s.routes))
	for _, r := range s.routes {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pattern < out[j].Pattern })
	return out
}

// Handler returns the API as an http.Handler, for tests and for callers that
// serve it themselves.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Start listens (unless a listener was injected) and serves in a goroutine.
// It returns once the listener is bound: connections made after it returns
// are served. ctx bounds only the listening.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("httpapi: start: closed")
	}
	if s.started {
		return ErrStarted
	}
	l := s.deps.Listener
	if l == nil && s.deps.Listen != nil {
		var err error
		l, err = s.deps.Listen("tcp", s.cfg.Addr)
		if err != nil {
			return fmt.Errorf("httpapi: start: %w", err)
		}
	}
	if l == nil {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, "tcp", s.cfg.Addr)
		if err != nil {
			return fmt.Errorf("httpapi: start: %w", err)
		}
	}
	s.started = true
	s.listener = l
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		// No WriteTimeout: blocking queries answer after up to MaxWait.
		BaseContext: func(net.Listener) context.Context { return s.baseCtx },
		ConnState:   s.fresh.track,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		// net.ErrClosed: StopAccepting closed the listener.
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("http api stopped serving", "err", err)
		}
	}()
	s.log.Info("http api listening", "addr", l.Addr().String())
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

// StopAccepting closes the listener and keeps serving the connections
// already accepted until Close. When the listening socket was handed to a
// successor agent, which holds it too, the successor takes every new
// connection; a request on a connection accepted here is still answered
// (http.Server.Shutdown would drop one whose request it had not read yet,
// so StopAccepting returns once each has sent it, or after a second).
func (s *Server) StopAccepting() error {
	s.mu.Lock()
	l := s.listener
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("httpapi: stop accepting: %w", err)
	}
	s.fresh.wait(freshGrace)
	return nil
}

// freshGrace bounds how long StopAccepting waits for the connections it
// accepted to send their first request: a local client sends it within
// microseconds of connecting.
const freshGrace = time.Second

// Close answers the blocking queries in flight with the current catalog,
// lets other requests finish for up to 5 seconds, closes the listener and
// waits for the serving goroutine. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, done := s.srv, s.serveDone
	s.mu.Unlock()
	s.cancelBase()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	<-done
	return nil
}

// serveHTTP wraps the mux: it answers unknown routes and wrong methods in
// JSON, and records every request's route, code and latency.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if !hostAllowed(r.Host) {
		s.metrics.observe(unmatchedRouteName, http.StatusForbidden, time.Since(start))
		httpjson.CodedError(w, http.StatusForbidden, httpjson.CodeHostNotAllowed, fmt.Errorf("host %q is refused: the API answers only requests addressed to an IP address or localhost (a protection against DNS rebinding)", r.Host))
		return
	}
	s.bodyDeadline(w, r)
	sw := &statusWriter{ResponseWriter: w}
	_, pattern := s.mux.Handler(r)
	s.routesMu.RLock()
	_, known := s.routes[pattern]
	s.routesMu.RUnlock()
	route := pattern
	if pattern == "" {
		route = unmatchedRouteName
		httpjson.NoRoute(s.mux, sw, r)
	} else {
		if !known {
			route = "redirect"
		}
		s.mux.ServeHTTP(sw, r)
	}
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	d := time.Since(start)
	s.metrics.observe(route, sw.status, d)
	s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "route", route, "code", sw.status, "duration", d)
}

// hostAllowed reports whether a request's Host header names the agent by an
// IP address or as localhost. A page of evil.example, whose name an attacker
// points at 127.0.0.1 (DNS rebinding), reaches the API with the browser's
// cookies and origin rules on its side, but sends Host: evil.example.
// Programs and the CLI address the agent by IP. An empty Host (HTTP/1.0) is
// not a browser's.
func hostAllowed(host string) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// bodyDeadline gives a request that has a body BodyTimeout to send it. The
// deadline is lifted once the body has been read, so that a long answer (a
// forwarded write waiting out an election) is not cut by it.
func (s *Server) bodyDeadline(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) != nil {
		return // not a connection that supports it (a test recorder)
	}
	r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
}

// deadlineBody lifts the read deadline once its body has been read whole.
// A body that failed keeps it, so that the server, which drains what is
// left of a body before it reuses a connection, gives up on that one too.
type deadlineBody struct {
	io.ReadCloser
	once sync.Once
	lift func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.lift)
	}
	return n, err
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// metricsHandler serves the Gatherer in the Prometheus text format.
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// pathID is a path value, refused when empty.
func pathValue(r *http.Request, name string) (string, error) {
	v := r.PathValue(name)
	if strings.TrimSpace(v) == "" {
		return "", fmt.Errorf("the %s in the path is empty", name)
	}
	return v, nil
}
