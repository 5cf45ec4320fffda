// Package local holds this node's own services: those of the configuration
// files and those registered through the HTTP API. It runs their health
// checks (agent/health), aggregates each instance's health, and publishes
// the node's catalog.Record through a Publisher whenever anything changes;
// that is how registrations and health changes reach the gossip layer.
//
// API registrations are kept in <data_dir>/local/services.json and restored
// at start. Configuration services are replaced wholesale by Reload, which
// leaves API registrations alone.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/meshwork/meshwork/agent/health"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
)

// Errors of the Manager's methods, wrapped with an operation prefix.
var (
	// ErrServiceNotFound: no local service has that ID.
	ErrServiceNotFound = errors.New("service not found")
	// ErrCheckNotFound: no local check has that ID.
	ErrCheckNotFound = errors.New("check not found")
	// ErrNotTTL: the check exists but is not a TTL check.
	ErrNotTTL = health.ErrNotTTL
	// ErrBadStatus: a TTL update named an unknown status.
	ErrBadStatus = health.ErrBadStatus
	// ErrNotStarted: the method needs Start first.
	ErrNotStarted = errors.New("not started")
	// ErrClosed: Close has been called.
	ErrClosed = errors.New("closed")
)

// Publisher receives this node's record every time it changes. The gossip
// layer implements it (gossip.SetLocal). Calls come one at a time, with
// increasing versions; SetLocal must not block for long and must not call
// back into the Manager.
type Publisher interface {
	SetLocal(rec catalog.Record)
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(rec catalog.Record)

// SetLocal calls f(rec).
func (f PublisherFunc) SetLocal(rec catalog.Record) { f(rec) }

// NodeInfo is the node-level part of the record.
type NodeInfo struct {
	// Addr is the address other agents reach this node at. Required.
	Addr string
	// TunnelPort is the UDP port of the QUIC listener. Default: 0, none.
	TunnelPort int
	// Server marks a Raft server agent. Default: false.
	Server bool
	// Meta holds small node attributes (the Raft port...). Default: none.
	Meta map[string]string
}

func (n *NodeInfo) validate() error {
	if _, err := netip.ParseAddr(n.Addr); err != nil {
		return fmt.Errorf("addr %q is not an IP address", n.Addr)
	}
	if n.TunnelPort < 0 || n.TunnelPort > 65535 {
		return fmt.Errorf("tunnel_port %d is out of range 0-65535", n.TunnelPort)
	}
	return nil
}

// Config configures a Manager.
type Config struct {
	// Node is this node's name. Required.
	Node string
	// DataDir keeps API registrations across restarts, in
	// <DataDir>/local/services.json. Default: "", kept in memory only.
	DataDir string
	// NodeInfo is the node-level part of the record. Addr is required.
	NodeInfo NodeInfo
	// Services come from the configuration files. Default: none.
	Services []api.ServiceDefinition
	// Previous, when set, is called once by Start: the health of each
	// service ID as the agent this one replaces last published it. The
	// checks of a service that was passing start passing instead of
	// critical, so that a restart does not take the node's instances out
	// of its peers' catalogs until the first probes end.
	Previous func() map[string]catalog.Health
}

// Validate checks the configuration; errors name the field and the value.
func (c *Config) Validate() error {
	if c.Node == "" {
		return errors.New("local: config: node is empty")
	}
	if err := c.NodeInfo.validate(); err != nil {
		return fmt.Errorf("local: config: node_info: %w", err)
	}
	defs, err := normalizeAll(c.Services)
	if err != nil {
		return fmt.Errorf("local: config: %w", err)
	}
	if err := validateSet(defs); err != nil {
		return fmt.Errorf("local: config: %w", err)
	}
	return nil
}

// Deps are the Manager's collaborators.
type Deps struct {
	// Publisher receives every new record. Required.
	Publisher Publisher
	// Logger. Default: discards.
	Logger *slog.Logger
	// Registerer receives the local and health metrics. Default: none.
	Registerer prometheus.Registerer
	// Clock drives the checks and seeds record versions.
	// Default: clock.Real.
	Clock clock.Clock
	// LookupUser resolves a unix user name to its uid, for ServiceByUID.
	// Default: os/user.Lookup.
	LookupUser func(name string) (uint32, error)
}

// Manager is the local state of this node. Its methods are safe for
// concurrent use. Lookups for the data plane (LocalInstances, ServiceByUID)
// read an immutable view and take no lock.
type Manager struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics
	hm      *health.Metrics
	users   *userCache

	mu       sync.Mutex
	node     NodeInfo
	services map[string]*service
	checks   map[string]*checkRef // by check ID
	maint    maintState           // maintenance.go; replaced, never modified
	started  bool
	closed   bool
	wg       sync.WaitGroup // reapers in flight

	pubMu      sync.Mutex // orders publications
	pubStopped bool       // set by Close under pubMu
	version    uint64
	view       atomic.Pointer[view]
	changed    atomic.Pointer[chan struct{}] // closed and replaced by each publication
}

type service struct {
	def    api.ServiceDefinition // normalized; never modified
	source string
	checks []*health.Check // in the order of def.Checks
}

type checkRef struct {
	serviceID string
	check     *health.Check
}

// New validates cfg and returns a Manager that does nothing until Start.
func New(cfg Config, deps Deps) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Publisher == nil {
		return nil, errors.New("local: deps: publisher is nil")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real
	}
	if deps.LookupUser == nil {
		deps.LookupUser = lookupUser
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	hm, err := health.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg.Services, _ = normalizeAll(cfg.Services)
	cfg.NodeInfo.Meta = maps.Clone(cfg.NodeInfo.Meta)
	m := &Manager{
		cfg:      cfg,
		deps:     deps,
		log:      deps.Logger,
		metrics:  met,
		hm:       hm,
		users:    newUserCache(deps.LookupUser, deps.Clock),
		node:     cfg.NodeInfo,
		services: map[string]*service{},
		checks:   map[string]*checkRef{},
	}
	m.view.Store(&view{})
	ch := make(chan struct{})
	m.changed.Store(&ch)
	return m, nil
}

// Start restores the API registrations from the data directory, adds the
// configuration's services, starts every check and publishes the first
// record. A state file that cannot be read or holds an invalid definition
// is an error naming the file: nothing is dropped silently.
func (m *Manager) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local: start: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("local: start: %w", ErrClosed)
	}
	if m.started {
		m.mu.Unlock()
		return errors.New("local: start: already started")
	}
	restored, err := m.load()
	if err != nil {
		m.mu.Unlock()
		return err
	}
	maint, err := m.loadMaint()
	if err != nil {
		m.mu.Unlock()
		return err
	}
	m.maint = maint.clone()
	all := map[string]api.ServiceDefinition{}
	sources := map[string]string{}
	for _, d := range m.cfg.Services {
		all[d.ID], sources[d.ID] = d, api.SourceConfig
	}
	for _, d := range restored {
		if sources[d.ID] == api.SourceConfig {
			m.log.Warn("registered service shadows a configured one", "service", d.ID)
		}
		all[d.ID], sources[d.ID] = d, api.SourceAPI
	}
	if err := validateSet(slices.Collect(maps.Values(all))); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("local: start: %w", err)
	}
	for _, id := range slices.Sorted(maps.Keys(all)) {
		if _, err := m.replaceLocked(all[id], sources[id]); err != nil {
			m.mu.Unlock()
			return fmt.Errorf("local: start: %w", err)
		}
	}
	m.started = true
	var prev map[string]catalog.Health
	if m.cfg.Previous != nil {
		prev = m.cfg.Previous()
	}
	resumed := 0
	for id, s := range m.services {
		if prev[id] == catalog.Passing {
			for _, c := range s.checks {
				c.Resume(catalog.Passing, "passing before the agent restarted; not probed since")
				resumed++
			}
		}
		m.startChecksLocked(s)
	}
	m.mu.Unlock()
	m.log.Info("local services loaded", "config", len(m.cfg.Services), "restored", len(restored), "checks_resumed_passing", resumed)
	m.publish()
	return nil
}

// Close stops every check and waits for them. It does not publish: leaving
// the cluster is the gossip layer's business. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var checks []*health.Check
	for _, s := range m.services {
		checks = append(checks, s.checks...)
	}
	m.mu.Unlock()
	closeChecks(checks)
	m.wg.Wait()
	// Wait out a publication in flight (one started by a TTL update from the
	// API), so that none reaches the Publisher after Close.
	m.pubMu.Lock()
	m.pubStopped = true
	m.pubMu.Unlock()
	return nil
}

// NodeName returns this node's name.
func (m *Manager) NodeName() string { return m.cfg.Node }

// NodeInfo returns the node-level part of the record.
func (m *Manager) NodeInfo() NodeInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.node
	n.Meta = maps.Clone(n.Meta)
	return n
}

// SetNodeInfo replaces the node-level part of the record (after the tunnel
// listener is bound, or when the agent learns its Raft port) and publishes.
func (m *Manager) SetNodeInfo(info NodeInfo) error {
	if err := info.validate(); err != nil {
		return fmt.Errorf("local: set node info: %w", err)
	}
	info.Meta = maps.Clone(info.Meta)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("local: set node info: %w", ErrClosed)
	}
	m.node = info
	m.mu.Unlock()
	m.publish()
	return nil
}

// Register adds a service or replaces the one with the same ID, and keeps
// it in the data directory. Checks whose definition did not change keep
// running with their status, so a re-registration does not flap. Invalid
// definitions and check IDs used by another service are refused with an
// error matching api.ErrInvalid.
func (m *Manager) Register(def api.ServiceDefinition) error {
	if err := def.Validate(); err != nil {
		return fmt.Errorf("local: register: %w", err)
	}
	def = def.Normalize()
	m.mu.Lock()
	if err := m.usableLocked(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("local: register %q: %w", def.ID, err)
	}
	for i, c := range def.Checks {
		if ref := m.checks[c.ID]; ref != nil && ref.serviceID != def.ID {
			m.mu.Unlock()
			return fmt.Errorf("local: register: %w", &api.ValidationError{Service: def.ID,
				Field: fmt.Sprintf("checks[%d].id", i), Problem: fmt.Sprintf("%q is already used by service %q", c.ID, ref.serviceID)})
		}
	}
	if err := m.persistLocked(def.ID, &def); err != nil {
		m.mu.Unlock()
		return err
	}
	old, err := m.replaceLocked(def, api.SourceAPI)
	if err != nil {
		m.mu.Unlock()
		return fmt.Errorf("local: register: %w", err)
	}
	m.startChecksLocked(m.services[def.ID])
	m.mu.Unlock()
	closeChecks(old)
	m.log.Info("service registered", "service", def.ID, "name", def.Name, "checks", len(def.Checks))
	m.publish()
	return nil
}

// Deregister removes the service with this ID. A configuration service comes
// back at the next Reload or restart; an API one is gone for good.
func (m *Manager) Deregister(id string) error {
	m.mu.Lock()
	if err := m.usableLocked(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("local: deregister %q: %w", id, err)
	}
	old, err := m.removeLocked(id)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("local: deregister %q: %w", id, err)
	}
	closeChecks(old)
	m.log.Info("service deregistered", "service", id)
	m.publish()
	return nil
}

// removeLocked drops service id, persisting first when it came from the
// API, and returns the checks to close.
func (m *Manager) removeLocked(id string) ([]*health.Check, error) {
	s := m.services[id]
	if s == nil {
		return nil, ErrServiceNotFound
	}
	if err := m.dropServiceMaintLocked(id); err != nil {
		return nil, err
	}
	if s.source == api.SourceAPI {
		if err := m.persistLocked(id, nil); err != nil {
			return nil, err
		}
	}
	delete(m.services, id)
	for _, c := range s.checks {
		delete(m.checks, c.ID())
	}
	return s.checks, nil
}

// Reload replaces every configuration service with defs (on SIGHUP). API
// registrations are kept, and a definition whose ID an API registration
// holds is skipped with a warning. Unchanged services keep their checks
// running. On error nothing changes.
func (m *Manager) Reload(defs []api.ServiceDefinition) error {
	norm, err := normalizeAll(defs)
	if err != nil {
		return fmt.Errorf("local: reload: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("local: reload: %w", ErrClosed)
	}
	if !m.started {
		if err := validateSet(norm); err != nil {
			m.mu.Unlock()
			return fmt.Errorf("local: reload: %w", err)
		}
		m.cfg.Services = norm
		m.mu.Unlock()
		return nil
	}
	next := map[string]api.ServiceDefinition{}
	var keep []api.ServiceDefinition
	for id, s := range m.services {
		if s.source == api.SourceAPI {
			next[id] = s.def
		}
	}
	for _, d := range norm {
		if _, shadowed := next[d.ID]; shadowed {
			m.log.Warn("configured service skipped: an API registration holds its id", "service", d.ID)
			continue
		}
		keep = append(keep, d)
	}
	for _, d := range keep {
		next[d.ID] = d
	}
	if err := validateSet(slices.Collect(maps.Values(next))); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("local: reload: %w", err)
	}
	var toClose []*health.Check
	for id, s := range m.services {
		if _, ok := next[id]; !ok && s.source == api.SourceConfig {
			old, _ := m.removeLocked(id)
			toClose = append(toClose, old...)
		}
	}
	for _, d := range keep {
		if s := m.services[d.ID]; s != nil && s.source == api.SourceConfig && reflect.DeepEqual(s.def, d) {
			continue
		}
		old, err := m.replaceLocked(d, api.SourceConfig)
		if err != nil {
			// Cannot happen for validated definitions; keep what was built.
			m.log.Error("service not reloaded", "service", d.ID, "err", err)
			continue
		}
		toClose = append(toClose, old...)
		m.startChecksLocked(m.services[d.ID])
	}
	m.cfg.Services = norm
	m.mu.Unlock()
	closeChecks(toClose)
	m.log.Info("configured services reloaded", "services", len(keep))
	m.publish()
	return nil
}

// replaceLocked installs def under its ID, reusing the running checks whose
// definitions are unchanged, and returns the checks to close. The new
// checks are not started.
func (m *Manager) replaceLocked(def api.ServiceDefinition, source string) ([]*health.Check, error) {
	old := m.services[def.ID]
	reusable := map[string]*health.Check{}
	if old != nil {
		for _, c := range old.checks {
			reusable[c.ID()] = c
		}
	}
	s := &service{def: def, source: source}
	for _, cd := range def.Checks {
		if c := reusable[cd.ID]; c != nil && reflect.DeepEqual(c.Definition(), cd) {
			s.checks = append(s.checks, c)
			delete(reusable, cd.ID)
			continue
		}
		c, err := health.New(cd, m.checkDeps(def.ID))
		if err != nil {
			closeChecks(s.checks)
			return nil, err
		}
		s.checks = append(s.checks, c)
	}
	if old != nil {
		for _, c := range old.checks {
			delete(m.checks, c.ID())
		}
	}
	m.services[def.ID] = s
	for _, c := range s.checks {
		m.checks[c.ID()] = &checkRef{serviceID: def.ID, check: c}
	}
	return slices.Collect(maps.Values(reusable)), nil
}

// startChecksLocked starts the service's checks that are not running yet.
func (m *Manager) startChecksLocked(s *service) {
	if !m.started || m.closed {
		return
	}
	for _, c := range s.checks {
		// A reused check is already started; Start says so and changes nothing.
		_ = c.Start(context.Background())
	}
}

func (m *Manager) checkDeps(serviceID string) health.Deps {
	return health.Deps{
		Clock: m.deps.Clock,
		OnChange: func(u health.Update) {
			m.log.Info("check status changed", "service", serviceID, "check", u.CheckID, "status", u.Status, "output", u.Output)
			m.publish()
		},
		OnCriticalTimeout: func(checkID string) { m.criticalTooLong(serviceID, checkID) },
		Metrics:           m.hm,
		Logger:            m.log,
	}
}

// criticalTooLong deregisters a service whose check has been critical for
// its deregister_critical_after. It runs in its own goroutine because
// removing the service closes the check that called it.
func (m *Manager) criticalTooLong(serviceID, checkID string) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		m.mu.Lock()
		ref := m.checks[checkID]
		if m.closed || ref == nil || ref.serviceID != serviceID || ref.check.State().Status != catalog.Critical {
			m.mu.Unlock()
			return
		}
		old, err := m.removeLocked(serviceID)
		m.mu.Unlock()
		if err != nil {
			m.log.Error("service critical for too long, but not deregistered", "service", serviceID, "check", checkID, "err", err)
			return
		}
		closeChecks(old)
		m.metrics.reaped.Inc()
		m.log.Warn("service deregistered: critical for too long", "service", serviceID, "check", checkID,
			"deregister_critical_after", ref.check.Definition().DeregisterCriticalAfter.String())
		m.publish()
	}()
}

// UpdateTTL sets the status of a TTL check: passing, warning or critical.
func (m *Manager) UpdateTTL(checkID, status, output string) error {
	m.mu.Lock()
	ref := m.checks[checkID]
	m.mu.Unlock()
	if ref == nil {
		return fmt.Errorf("local: update check %q: %w", checkID, ErrCheckNotFound)
	}
	err := ref.check.UpdateTTL(catalog.Health(status), output)
	if errors.Is(err, health.ErrClosed) {
		// Deregistered between the lookup and the update.
		return fmt.Errorf("local: update check %q: %w", checkID, ErrCheckNotFound)
	}
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	return nil
}

// Services returns the local services with their checks, sorted by ID.
func (m *Manager) Services() []api.AgentService {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.AgentService, 0, len(m.services))
	for _, id := range slices.Sorted(maps.Keys(m.services)) {
		out = append(out, m.agentServiceLocked(m.services[id]))
	}
	return out
}

// Service returns the local service with this ID.
func (m *Manager) Service(id string) (api.AgentService, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.services[id]
	if s == nil {
		return api.AgentService{}, false
	}
	return m.agentServiceLocked(s), true
}

// Checks returns every local check's state, sorted by ID.
func (m *Manager) Checks() []api.CheckStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.maintChecksLocked(nil)
	for _, s := range m.services {
		out = append(out, s.checkStatuses()...)
		out = append(out, m.maintChecksLocked(s)...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Record returns the record as it would be published now, at the version
// of the last publication.
func (m *Manager) Record() catalog.Record {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recordLocked(m.version)
}

func (m *Manager) usableLocked() error {
	if m.closed {
		return ErrClosed
	}
	if !m.started {
		return ErrNotStarted
	}
	return nil
}

// publish hands a new record to the Publisher and refreshes the data-plane
// view. Publications are serialised, so versions reach the Publisher in
// order.
func (m *Manager) publish() {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	if m.pubStopped {
		return
	}
	m.mu.Lock()
	if !m.started || m.closed {
		m.mu.Unlock()
		return
	}
	v := max(m.version+1, uint64(m.deps.Clock.Now().UnixNano()))
	m.version = v
	rec := m.recordLocked(v)
	vw := m.buildViewLocked()
	m.metrics.update(m.services)
	m.mu.Unlock()
	m.view.Store(vw)
	m.users.reset()
	m.deps.Publisher.SetLocal(rec)
	m.metrics.publishes.Inc()
	next := make(chan struct{})
	close(*m.changed.Swap(&next))
}

// Changed returns a channel closed at the next publication: a service
// registered, replaced, deregistered or reloaded, a change of health, or new
// node info. Watchers (the data plane, the certificate manager's service
// list) take the channel first, then read Services, and wait on it for the
// change after that. It never blocks.
func (m *Manager) Changed() <-chan struct{} { return *m.changed.Load() }

func (m *Manager) recordLocked(version uint64) catalog.Record {
	rec := catalog.Record{
		Node:       m.cfg.Node,
		Version:    version,
		Addr:       m.node.Addr,
		TunnelPort: m.node.TunnelPort,
		Server:     m.node.Server,
		Meta:       maps.Clone(m.node.Meta),
	}
	for _, id := range slices.Sorted(maps.Keys(m.services)) {
		s := m.services[id]
		cs := catalog.Service{
			ID:      s.def.ID,
			Name:    s.def.Name,
			Address: s.def.Address,
			Port:    s.def.Port,
			Tags:    slices.Clone(s.def.Tags),
			Meta:    maps.Clone(s.def.Meta),
			Health:  m.healthLocked(s),
		}
		for _, p := range s.def.Ports {
			cs.Ports = append(cs.Ports, catalog.Port{Name: p.Name, Port: p.Port})
		}
		rec.Services = append(rec.Services, cs)
	}
	return rec
}

// health is the worst status of the service's checks; passing with none.
func (s *service) health() catalog.Health {
	h := catalog.Passing
	for _, c := range s.checks {
		h = h.Worse(c.State().Status)
	}
	return h
}

// agentServiceLocked is s as the API shows it, with the health it is
// published with and its maintenance check, if any.
func (m *Manager) agentServiceLocked(s *service) api.AgentService {
	out := s.agentService()
	out.Health = string(m.healthLocked(s))
	out.Checks = append(out.Checks, m.maintChecksLocked(s)...)
	return out
}

func (s *service) agentService() api.AgentService {
	return api.AgentService{
		ID:        s.def.ID,
		Name:      s.def.Name,
		Address:   s.def.Address,
		Port:      s.def.Port,
		Ports:     slices.Clone(s.def.Ports),
		Tags:      slices.Clone(s.def.Tags),
		Meta:      maps.Clone(s.def.Meta),
		Upstreams: slices.Clone(s.def.Upstreams),
		User:      s.def.User,
		Source:    s.source,
		Health:    string(s.health()),
		Checks:    s.checkStatuses(),
	}
}

func (s *service) checkStatuses() []api.CheckStatus {
	out := make([]api.CheckStatus, 0, len(s.checks))
	for _, c := range s.checks {
		st := c.State()
		def := c.Definition()
		out = append(out, api.CheckStatus{
			ID:          def.ID,
			Name:        def.Name,
			ServiceID:   s.def.ID,
			ServiceName: s.def.Name,
			Type:        c.Kind(),
			Status:      string(st.Status),
			Output:      st.Output,
			Since:       formatSince(st.Since),
		})
	}
	return out
}

func closeChecks(cs []*health.Check) {
	for _, c := range cs {
		c.Close()
	}
}

// normalizeAll validates and normalizes defs, refusing duplicate IDs.
func normalizeAll(defs []api.ServiceDefinition) ([]api.ServiceDefinition, error) {
	out := make([]api.ServiceDefinition, 0, len(defs))
	seen := map[string]int{}
	for i, d := range defs {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("services[%d]: %w", i, err)
		}
		n := d.Normalize()
		if j, dup := seen[n.ID]; dup {
			return nil, fmt.Errorf("services[%d]: %w", i, &api.ValidationError{
				Service: n.ID, Field: "id", Problem: fmt.Sprintf("%q is also the id of services[%d]", n.ID, j)})
		}
		seen[n.ID] = i
		out = append(out, n)
	}
	return out, nil
}

// validateSet refuses a set of normalized definitions in which two services
// use the same check ID: checks are addressed by ID alone in the API.
func validateSet(defs []api.ServiceDefinition) error {
	sort.Slice(defs, func(i, j int) bool { return defs[i].ID < defs[j].ID })
	owner := map[string]string{}
	for _, d := range defs {
		for i, c := range d.Checks {
			if other, dup := owner[c.ID]; dup && other != d.ID {
				return &api.ValidationError{Service: d.ID, Field: fmt.Sprintf("checks[%d].id", i),
					Problem: fmt.Sprintf("%q is already used by service %q", c.ID, other)}
			}
			owner[c.ID] = d.ID
		}
	}
	return nil
}
