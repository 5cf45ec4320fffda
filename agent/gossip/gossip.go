package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// Errors of the lifecycle and of joining.
var (
	// ErrNotStarted is returned by operations that need a running member.
	ErrNotStarted = errors.New("gossip is not started")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("gossip is closed")
	// ErrNotOwner is returned by SetLocal for a record of another node.
	ErrNotOwner = errors.New("record belongs to another node")
	// ErrKeyMismatch wraps a join error caused by a gossip encryption key
	// that the contacted agents do not share (or by encryption being on at
	// one end only).
	ErrKeyMismatch = errors.New("gossip encryption key does not match")
	// ErrJoin wraps every other failed join.
	ErrJoin = errors.New("join failed")
)

// Deps are the collaborators of a Gossip.
type Deps struct {
	// Logger receives the layer's logs and memberlist's, levelled. Nil
	// discards them.
	Logger *slog.Logger
	// Registerer receives the metrics of metrics.go. Nil means a private
	// registry (the metrics are then not exported).
	Registerer prometheus.Registerer
	// Store receives a new catalog snapshot on every change. Required.
	Store *catalog.Store
	// Transport carries gossip. Nil means memberlist's NetTransport on
	// BindAddr:BindPort, created by Start.
	Transport memberlist.Transport
}

// MemberInfo is one member as the API shows it.
type MemberInfo struct {
	Name string `json:"name"`
	// Addr and Port are the member's gossip address.
	Addr    string               `json:"addr"`
	Port    int                  `json:"port"`
	Status  catalog.MemberStatus `json:"status"`
	Server  bool                 `json:"server"`
	Version uint64               `json:"version"`
	// Meta is the record's node meta (for example the Raft port).
	Meta map[string]string `json:"meta,omitempty"`
}

const (
	stateNew = iota
	stateRunning
	stateClosed
)

// Gossip is one member of the cluster: memberlist plus the catalog records.
// Its methods are safe for concurrent use.
type Gossip struct {
	cfg      Config
	log      *slog.Logger
	store    *catalog.Store
	deps     Deps
	metrics  *metrics
	counters counters
	queue    *memberlist.TransmitLimitedQueue
	numAlive atomic.Int32 // live peers, this node not counted

	ml      atomic.Pointer[memberlist.Memberlist]
	keyring *memberlist.Keyring // nil when gossip is not encrypted
	// selfIP and selfPort are the advertised address, set by Start before
	// ml. (memberlist's LocalNode returns a pointer it keeps writing to.)
	selfIP   net.IP
	selfPort int
	trans    *observedTransport

	// lifeMu serialises Start, Leave and Close: memberlist panics on a
	// Leave after Shutdown.
	lifeMu sync.Mutex
	// keyMu serialises keyring changes and writes of KeyringFile.
	keyMu sync.Mutex

	// mu guards everything below. It is never held while calling into
	// memberlist, because memberlist calls the delegates (which take mu)
	// while holding its own node lock.
	mu          sync.Mutex
	state       int
	local       localState
	peers       map[string]*peer
	queries     map[uint64]*pendingQuery
	seenQueries map[uint64]time.Time

	metaKick    chan struct{}
	publishKick chan struct{}
	dirty       bool // a change not yet published, see changedLocked
	sendQ       chan outMsg
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

type localState struct {
	rec     catalog.Record
	leaving bool   // Leave started: the record and meta carry the flag
	left    bool   // Leave finished
	epoch   uint64 // liveness epoch, see nodeMeta
	big     bool   // the record does not fit in a packet
}

// peer is what this node knows about another.
type peer struct {
	name    string
	rec     *catalog.Record // latest record, nil until one arrived
	leaving bool            // the latest record carries the leaving flag
	recvAt  time.Time       // when rec arrived (to forget records of unknown nodes)

	known    bool            // memberlist reported the node at least once
	node     memberlist.Node // address as memberlist knows it (Name, Addr, Port)
	meta     nodeMeta
	alive    bool      // in memberlist's view: alive or suspect
	deadAt   time.Time // when memberlist reported it gone
	refused  time.Time // last refused TCP connection to it
	want     uint64    // a record version announced by meta and not yet held
	pullAt   time.Time // when to ask its owner for it
	lastSeen catalog.MemberStatus

	suspect      bool
	suspectEpoch uint64
	suspectUntil time.Time
	down         bool
	downEpoch    uint64
	lifeSent     time.Time // last notice sent straight to it, see onLife
}

type outMsg struct {
	to         memberlist.Node
	t          msgType
	msg        []byte
	bestEffort bool // one UDP packet instead of a stream
}

// New validates cfg and allocates a member. It opens no socket and starts
// no goroutine.
func New(cfg Config, deps Deps) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gossip: new: %w", err)
	}
	if deps.Store == nil {
		return nil, fmt.Errorf("gossip: new: %w: Deps.Store is nil", ErrInvalidConfig)
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	g := &Gossip{
		cfg:         cfg,
		log:         logger,
		store:       deps.Store,
		deps:        deps,
		peers:       make(map[string]*peer),
		queries:     make(map[uint64]*pendingQuery),
		seenQueries: make(map[uint64]time.Time),
		metaKick:    make(chan struct{}, 1),
		publishKick: make(chan struct{}, 1),
		sendQ:       make(chan outMsg, 256),
	}
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(g.numAlive.Load()) + 1 },
		RetransmitMult: cfg.RetransmitMult,
	}
	m, err := newMetrics(reg, g.queue.NumQueued, g.Stats)
	if err != nil {
		return nil, fmt.Errorf("gossip: new: metrics: %w", err)
	}
	g.metrics = m
	now := uint64(time.Now().UnixNano())
	g.local = localState{
		rec:   catalog.Record{Node: cfg.NodeName, Version: now},
		epoch: now,
	}
	return g, nil
}

// Start binds the transport (unless one was injected), creates the
// memberlist, and returns once this node listens. Joining RetryJoin happens in
// the background, with backoff, until one address answers.
func (g *Gossip) Start(ctx context.Context) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	g.mu.Lock()
	st := g.state
	g.mu.Unlock()
	switch st {
	case stateRunning:
		return fmt.Errorf("gossip: start: already started")
	case stateClosed:
		return fmt.Errorf("gossip: start: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gossip: start: %w", err)
	}

	keys, err := g.loadKeyring()
	if err != nil {
		return fmt.Errorf("gossip: start: %w", err)
	}
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return fmt.Errorf("gossip: start: keyring: %w", err)
		}
		g.keyring = kr
		if err := g.persistKeyring(); err != nil {
			return fmt.Errorf("gossip: start: %w", err)
		}
	}

	mlLog := log.New(&logWriter{log: g.log, onEvent: g.onMemberlistEvent}, "", 0)
	inner := g.deps.Transport
	if inner == nil {
		nt, err := NewNetTransport(g.cfg.BindAddr, g.cfg.BindPort, g.log)
		if err != nil {
			return fmt.Errorf("gossip: start: listen on %s: %w",
				net.JoinHostPort(g.cfg.BindAddr, strconv.Itoa(g.cfg.BindPort)), err)
		}
		inner = nt
	}
	trans := newObservedTransport(inner, &g.counters, g.onRefused, g.onLife)
	g.trans = trans

	mc := g.memberlistConfig(mlLog)
	fixed := &advertiseFix{NodeAwareTransport: trans}
	mc.Transport = fixed
	// memberlist asks the transport the same question when it starts.
	ip, port, err := fixed.FinalAdvertiseAddr(g.cfg.AdvertiseAddr, g.cfg.AdvertisePort)
	if err != nil {
		_ = trans.Shutdown()
		return fmt.Errorf("gossip: start: advertise address: %w", err)
	}
	g.selfIP, g.selfPort = ip, port
	g.ctx, g.cancel = context.WithCancel(context.Background())
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = trans.Shutdown()
		g.cancel()
		return fmt.Errorf("gossip: start: %w", err)
	}
	g.ml.Store(ml)

	g.mu.Lock()
	g.state = stateRunning
	if g.local.rec.Addr == "" {
		g.local.rec.Addr = ip.String()
	}
	g.publishLocked()
	self := g.localWireLocked()
	g.mu.Unlock()
	// Queued now, sent to the first members this node learns of; each of them
	// passes it on.
	g.disseminate(self, "")

	g.log.Info("gossip started", "node", g.cfg.NodeName, "addr", g.Addr(), "encrypted", g.keyring != nil)

	const senders = 4
	g.wg.Add(4 + senders)
	go g.publisher()
	go g.maintain()
	go g.metaLoop()
	go g.reconnectLoop()
	for range senders {
		go g.sender()
	}
	if len(g.cfg.RetryJoin) > 0 {
		g.wg.Add(1)
		go g.retryJoin()
	}
	return nil
}

func (g *Gossip) memberlistConfig(logger *log.Logger) *memberlist.Config {
	c := g.cfg
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.NodeName
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.IndirectChecks = c.IndirectChecks
	mc.SuspicionMult = c.SuspicionMult
	mc.SuspicionMaxTimeoutMult = c.SuspicionMaxTimeoutMult
	mc.AwarenessMaxMultiplier = c.AwarenessMaxMultiplier
	mc.GossipInterval = c.GossipInterval
	mc.GossipNodes = c.GossipNodes
	mc.GossipToTheDeadTime = c.GossipToTheDeadTime
	mc.RetransmitMult = c.RetransmitMult
	mc.PushPullInterval = c.PushPullInterval
	mc.TCPTimeout = c.TCPTimeout
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	mc.DisableTcpPings = c.DisableTCPPings
	mc.UDPBufferSize = c.PacketSize
	mc.EnableCompression = c.EnableCompression
	mc.Keyring = g.keyring
	mc.Logger = logger
	mc.LogOutput = nil
	d := &delegate{g: g}
	mc.Delegate = d
	mc.Events = d
	mc.Conflict = d
	mc.Ping = d
	mc.DelegateProtocolVersion = protocolVersion
	mc.DelegateProtocolMin = protocolVersion
	mc.DelegateProtocolMax = protocolVersion
	return mc
}

// advertiseFix completes an advertise address given without a port with the
// port the transport is bound to (memberlist would advertise port 0).
type advertiseFix struct {
	memberlist.NodeAwareTransport
}

func (a *advertiseFix) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" && port == 0 {
		_, bound, err := a.NodeAwareTransport.FinalAdvertiseAddr("", 0)
		if err != nil {
			return nil, 0, err
		}
		port = bound
	}
	return a.NodeAwareTransport.FinalAdvertiseAddr(ip, port)
}

// Join contacts addrs (host or host:port) and merges state with them. It
// returns the number of addresses that answered. An error wraps
// ErrKeyMismatch when the agents answered but do not share this node's
// gossip key, else ErrJoin. Either way the log says what happened.
func (g *Gossip) Join(addrs []string) (int, error) {
	ml := g.ml.Load()
	if ml == nil {
		return 0, fmt.Errorf("gossip: join: %w", ErrNotStarted)
	}
	norm := make([]string, 0, len(addrs))
	for _, a := range addrs {
		n, err := joinAddr(a)
		if err != nil {
			return 0, fmt.Errorf("gossip: join: %w: address %q: %v", ErrJoin, a, err)
		}
		norm = append(norm, n)
	}
	n, err := ml.Join(norm)
	if err == nil {
		g.log.Info("gossip joined the cluster", "contacted", n, "addrs", norm)
		// Announce this node's record to its new cluster by gossip: the
		// push/pull of the join gave it only to the contacted members.
		g.mu.Lock()
		self := g.localWireLocked()
		g.mu.Unlock()
		g.disseminate(self, "")
		return n, nil
	}
	if isKeyMismatch(err.Error()) {
		g.log.Error("gossip join refused: this node's gossip encryption key does not match the cluster's",
			"addrs", norm, "error", err.Error(),
			"hint", "give this agent the cluster's keyring (see `meshwork keyring list` on a member)")
		return 0, fmt.Errorf("gossip: join %v: %w: %v", norm, ErrKeyMismatch, err)
	}
	g.log.Warn("gossip join failed",
		"addrs", norm, "error", err.Error(),
		"hint", "check that the agents run and are reachable on the gossip port (UDP and TCP); if they are, the gossip encryption key may not match")
	return 0, fmt.Errorf("gossip: join %v: %w: %v", norm, ErrJoin, err)
}

func (g *Gossip) retryJoin() {
	defer g.wg.Done()
	wait := g.cfg.RetryJoinInterval
	for attempt := 1; ; attempt++ {
		if _, err := g.Join(g.cfg.RetryJoin); err == nil {
			return
		}
		g.log.Info("gossip will retry joining", "attempt", attempt, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-g.ctx.Done():
			t.Stop()
			return
		}
		wait = min(wait*2, g.cfg.RetryJoinMax)
	}
}

// Leave announces a graceful departure and waits up to timeout for it to be
// gossiped: other members then show this node as left, not failed. Close
// must still be called.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	g.mu.Lock()
	if g.state != stateRunning {
		st := g.state
		g.mu.Unlock()
		if st == stateClosed {
			return fmt.Errorf("gossip: leave: %w", ErrClosed)
		}
		return fmt.Errorf("gossip: leave: %w", ErrNotStarted)
	}
	g.local.leaving = true
	g.local.rec.Version = g.nextVersionLocked()
	w := g.localWireLocked()
	g.publishLocked()
	g.mu.Unlock()

	deadline := time.Now().Add(timeout)
	ml := g.ml.Load()
	g.disseminate(w, "")
	// A broadcast reaches each member only with high probability, and one
	// that misses the leaving flag would show this node as failed.
	g.tellEveryLive(w)
	// The meta update carries the leaving flag in memberlist's own alive
	// message; wait for it to go out before memberlist's leave message.
	if err := ml.UpdateNode(timeout / 2); err != nil {
		g.log.Debug("gossip leave: meta update not fully sent", "error", err)
	}
	err := ml.Leave(max(time.Until(deadline), 10*time.Millisecond))
	g.mu.Lock()
	g.local.left = true
	g.publishLocked()
	g.mu.Unlock()
	if err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	g.log.Info("gossip left the cluster", "node", g.cfg.NodeName)
	return nil
}

// Close stops gossip without a leave message (others will see this node
// fail, unless Leave was called first), then waits for every goroutine. It is
// idempotent.
func (g *Gossip) Close() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	g.mu.Lock()
	st := g.state
	g.state = stateClosed
	queries := g.queries
	g.queries = make(map[uint64]*pendingQuery)
	g.mu.Unlock()
	if st != stateRunning {
		return nil
	}
	for _, q := range queries {
		q.finish()
	}
	g.cancel()
	err := g.ml.Load().Shutdown()
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("gossip: close: %w", err)
	}
	return nil
}

// SetLocal publishes this node's record. The owner (the agent's local state)
// calls it on every change; rec.Node may be empty or must be this node's
// name, rec.Addr defaults to the advertised address, and rec.Version is
// ignored: the layer assigns a version above every earlier one, also across
// restarts (it is seeded from the clock). It returns that version.
func (g *Gossip) SetLocal(rec catalog.Record) (uint64, error) {
	rec = cloneRecord(rec)
	if rec.Node == "" {
		rec.Node = g.cfg.NodeName
	}
	if rec.Node != g.cfg.NodeName {
		return 0, fmt.Errorf("gossip: set local: %w: %q is not %q", ErrNotOwner, rec.Node, g.cfg.NodeName)
	}
	g.mu.Lock()
	if g.state == stateClosed {
		g.mu.Unlock()
		return 0, fmt.Errorf("gossip: set local: %w", ErrClosed)
	}
	if rec.Addr == "" {
		rec.Addr = g.local.rec.Addr
		if rec.Addr == "" {
			rec.Addr = g.cfg.AdvertiseAddr
		}
	}
	check := rec
	check.Version = 1
	if check.Addr == "" {
		check.Addr = "0.0.0.0" // filled in by Start
	}
	if err := check.Validate(); err != nil {
		g.mu.Unlock()
		return 0, fmt.Errorf("gossip: set local: %w", err)
	}
	rec.Version = g.nextVersionLocked()
	g.local.rec = rec
	running := g.state == stateRunning
	w := g.localWireLocked()
	g.publishLocked()
	g.mu.Unlock()
	if running {
		g.disseminate(w, "")
		g.kickMeta()
	}
	return rec.Version, nil
}

// Local returns this node's current record.
func (g *Gossip) Local() catalog.Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	return cloneRecord(g.local.rec)
}

// Members returns every member this node knows, itself included, sorted by
// name.
func (g *Gossip) Members() []MemberInfo {
	var selfAddr string
	var selfPort int
	if g.ml.Load() != nil {
		selfAddr, selfPort = g.selfIP.String(), g.selfPort
	}
	now := time.Now()
	g.mu.Lock()
	out := make([]MemberInfo, 0, len(g.peers)+1)
	out = append(out, MemberInfo{
		Name: g.cfg.NodeName, Addr: selfAddr, Port: selfPort,
		Status: g.selfStatusLocked(), Server: g.local.rec.Server,
		Version: g.local.rec.Version, Meta: cloneMap(g.local.rec.Meta),
	})
	for _, p := range g.peers {
		if !p.known {
			continue
		}
		mi := MemberInfo{
			Name: p.name, Addr: p.node.Addr.String(), Port: int(p.node.Port),
			Status: p.status(now), Server: p.meta.Server,
		}
		if p.rec != nil {
			mi.Server = p.rec.Server
			mi.Version = p.rec.Version
			mi.Meta = cloneMap(p.rec.Meta)
		}
		out = append(out, mi)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stats returns the traffic counters of this member's transport.
func (g *Gossip) Stats() Stats { return g.counters.snapshot() }

// Name is this node's name.
func (g *Gossip) Name() string { return g.cfg.NodeName }

// Addr is the address other members reach this one at (host:port), empty
// before Start.
func (g *Gossip) Addr() string {
	if g.ml.Load() == nil {
		return ""
	}
	return net.JoinHostPort(g.selfIP.String(), strconv.Itoa(g.selfPort))
}

// ---- state, under g.mu ----

func (g *Gossip) nextVersionLocked() uint64 {
	v := uint64(time.Now().UnixNano())
	if v <= g.local.rec.Version {
		v = g.local.rec.Version + 1
	}
	return v
}

func (g *Gossip) localWireLocked() wireRecord {
	return wireRecord{Record: g.local.rec, Leaving: g.local.leaving}
}

func (g *Gossip) selfStatusLocked() catalog.MemberStatus {
	if g.local.leaving || g.local.left {
		return catalog.StatusLeft
	}
	return catalog.StatusAlive
}

func (g *Gossip) peerLocked(name string) *peer {
	p := g.peers[name]
	if p == nil {
		p = &peer{name: name}
		g.peers[name] = p
	}
	return p
}

// status derives what the catalog shows for p; see the package comment.
func (p *peer) status(now time.Time) catalog.MemberStatus {
	leaving := p.leaving
	if p.rec == nil || p.meta.Version > p.rec.Version {
		leaving = p.meta.Leaving
	}
	switch {
	case !p.alive && leaving:
		return catalog.StatusLeft
	case !p.alive:
		return catalog.StatusFailed
	case leaving:
		return catalog.StatusLeft
	case p.down:
		return catalog.StatusFailed
	case p.suspect && now.Before(p.suspectUntil):
		return catalog.StatusSuspect
	}
	return catalog.StatusAlive
}

// changedLocked notes a change that came from the network, published by
// the publisher goroutine: a burst of events (a join, a partition healing,
// 50 members refuting at once) then costs one snapshot, not one per event.
// Before Start it publishes at once.
func (g *Gossip) changedLocked() {
	if g.state != stateRunning {
		g.publishLocked()
		return
	}
	g.dirty = true
	select {
	case g.publishKick <- struct{}{}:
	default:
	}
}

// publishInterval is the shortest time between two snapshots built for
// network events: short next to any propagation delay.
const publishInterval = 5 * time.Millisecond

func (g *Gossip) publisher() {
	defer g.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-g.publishKick:
		case <-g.ctx.Done():
			return
		}
		g.mu.Lock()
		if g.dirty {
			g.publishLocked()
		}
		g.mu.Unlock()
		t.Reset(publishInterval)
		select {
		case <-t.C:
		case <-g.ctx.Done():
			return
		}
	}
}

// publishLocked hands the catalog a snapshot of every member.
func (g *Gossip) publishLocked() {
	g.dirty = false
	now := time.Now()
	members := make([]catalog.Member, 0, len(g.peers)+1)
	counts := map[catalog.MemberStatus]int{}
	self := g.selfStatusLocked()
	members = append(members, catalog.Member{Record: g.local.rec, Status: self})
	counts[self]++
	for _, p := range g.peers {
		if !p.known {
			continue
		}
		st := p.status(now)
		p.lastSeen = st
		counts[st]++
		rec := catalog.Record{Node: p.name, Addr: p.node.Addr.String(), Server: p.meta.Server}
		if p.rec != nil {
			rec = *p.rec
		}
		members = append(members, catalog.Member{Record: rec, Status: st})
	}
	g.store.Publish(members)
	g.updateWatchedLocked(now)
	for _, s := range []catalog.MemberStatus{catalog.StatusAlive, catalog.StatusSuspect, catalog.StatusFailed, catalog.StatusLeft} {
		g.metrics.members.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

// updateWatchedLocked tells the transport which addresses belong to members
// this node suspects or holds down, so that a packet from one of them, a
// sign of life, reaches onLife.
func (g *Gossip) updateWatchedLocked(now time.Time) {
	if g.trans == nil {
		return
	}
	var w map[string]string
	for _, p := range g.peers {
		if p.known && p.alive && (p.down || (p.suspect && now.Before(p.suspectUntil))) {
			if w == nil {
				w = make(map[string]string)
			}
			w[net.JoinHostPort(p.node.Addr.String(), strconv.Itoa(int(p.node.Port)))] = p.name
		}
	}
	if w == nil {
		g.trans.watched.Store(nil)
	} else {
		g.trans.watched.Store(&w)
	}
}

// onLife runs when a packet arrives from a member this node suspects: it is
// running after all, but may not know that it is suspected (the suspect
// messages gossiped while a link was down are lost, and memberlist does not
// resend them). Telling it directly lets it refute at once, with a meta
// update whose higher incarnation also ends memberlist's suspicion timer
// here, instead of waiting for this node's next probe of it, which
// Lifeguard may have slowed down. At most once per probe interval.
func (g *Gossip) onLife(node string) {
	now := time.Now()
	g.mu.Lock()
	p := g.peers[node]
	if p == nil || !p.alive || !(p.down || p.suspect) || now.Sub(p.lifeSent) < g.cfg.ProbeInterval {
		g.mu.Unlock()
		return
	}
	p.lifeSent = now
	t := msgSuspect
	if p.down {
		t = msgDown
	}
	n := notice{Node: node, Epoch: p.meta.Epoch, From: g.cfg.NodeName}
	to := p.node
	g.mu.Unlock()
	select {
	case g.sendQ <- outMsg{to: to, t: t, msg: mustEncode(t, &n), bestEffort: true}:
	default:
	}
}

// maxSuspicion bounds how long memberlist may keep a node suspect before it
// declares it dead; a suspect notice older than that is stale.
func (g *Gossip) maxSuspicion() time.Duration {
	n := float64(g.numAlive.Load() + 1)
	scale := math.Max(1, math.Log10(math.Max(1, n)))
	min := time.Duration(float64(g.cfg.SuspicionMult) * scale * float64(g.cfg.ProbeInterval))
	return time.Duration(g.cfg.SuspicionMaxTimeoutMult)*min + 2*g.cfg.ProbeInterval
}

// applyRecord stores w when it is newer than what this node holds. It
// reports whether it did, and whether w was an old copy of this node's own
// record that had to be outrun.
func (g *Gossip) applyRecordLocked(w *wireRecord, now time.Time) (applied, outrun bool) {
	if w.Record.Node == g.cfg.NodeName {
		// Our own record, back from the network. If it is newer than ours,
		// a previous run of this node published it (a restart with a clock
		// that went back): jump past it so that the current one wins.
		if w.Record.Version > g.local.rec.Version {
			g.local.rec.Version = w.Record.Version + 1
			return false, true
		}
		return false, false
	}
	p := g.peerLocked(w.Record.Node)
	if p.rec != nil && w.Record.Version <= p.rec.Version {
		return false, false
	}
	rec := w.Record
	p.rec = &rec
	p.leaving = w.Leaving
	p.recvAt = now
	if p.want <= rec.Version {
		p.want = 0
	}
	return true, false
}

// ---- dissemination ----

// maxPullsPerTick bounds the pulls one node sends per maintenance tick, so
// that a node that fell behind on many records (after a partition, or while
// many nodes join at once) does not open dozens of streams at once; push/pull
// repairs the rest.
const maxPullsPerTick = 2

// pullDelay is how long to wait for an announced record before pulling it: a
// record that travels by broadcast normally arrives well within 4 PullDelay,
// a large one is pushed over streams and should arrive within PullDelay.
// Jitter spreads the pulls of many nodes.
func (g *Gossip) pullDelay(big bool) time.Duration {
	d := g.cfg.PullDelay
	if !big {
		d *= 4
	}
	return d + rand.N(d)
}

// maxBroadcast is the largest message that rides in gossip packets: the
// packet size less memberlist's framing, label and encryption overhead.
func (g *Gossip) maxBroadcast() int { return g.cfg.PacketSize - 128 }

// disseminate spreads a record this node holds as new: by broadcast when it
// fits in a packet, else by pushing it over streams to a few members.
func (g *Gossip) disseminate(w wireRecord, from string) {
	w.From = ""
	w.Fwd = false
	msg := mustEncode(msgRecord, &w)
	big := len(msg) > g.maxBroadcast()
	if w.Record.Node == g.cfg.NodeName {
		g.mu.Lock()
		if w.Record.Version == g.local.rec.Version {
			g.local.big = big
		}
		g.mu.Unlock()
	}
	if !big {
		g.queue.QueueBroadcast(&namedBroadcast{name: "r/" + w.Record.Node, msg: msg})
		return
	}
	w.From = g.cfg.NodeName
	w.Fwd = true
	msg = mustEncode(msgRecord, &w)
	for _, to := range g.randomLive(g.cfg.StreamFanout, w.Record.Node, from) {
		g.sendAsync(to, msgRecord, msg)
	}
}

// tellEveryLive sends w straight to every live member: in one UDP packet
// when it fits, else over a stream. A record that arrives after memberlist
// removed its node still counts, so the order against the leave message
// does not matter.
func (g *Gossip) tellEveryLive(w wireRecord) {
	w.From, w.Fwd = "", false
	msg := mustEncode(msgRecord, &w)
	fits := len(msg) <= g.maxBroadcast()
	ml := g.ml.Load()
	for _, to := range g.randomLive(math.MaxInt, w.Record.Node) {
		if fits {
			if err := ml.SendBestEffort(&to, msg); err == nil {
				continue
			}
		}
		g.sendAsync(to, msgRecord, msg)
	}
}

// randomLive picks up to n live members other than the excluded names.
func (g *Gossip) randomLive(n int, exclude ...string) []memberlist.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	cands := make([]memberlist.Node, 0, len(g.peers))
	for _, p := range g.peers {
		if !p.known || !p.alive || p.down {
			continue
		}
		skip := false
		for _, e := range exclude {
			if p.name == e {
				skip = true
			}
		}
		if !skip {
			cands = append(cands, p.node)
		}
	}
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	if len(cands) > n {
		cands = cands[:n]
	}
	return cands
}

// sendAsync queues a stream message; a full queue drops it (gossip and
// push/pull repair what is lost).
func (g *Gossip) sendAsync(to memberlist.Node, t msgType, msg []byte) {
	select {
	case g.sendQ <- outMsg{to: to, t: t, msg: msg}:
	default:
		g.metrics.streams.WithLabelValues(t.String(), "dropped").Inc()
		g.log.Debug("gossip stream queue full, message dropped", "to", to.Name, "type", t.String())
	}
}

func (g *Gossip) sender() {
	defer g.wg.Done()
	for {
		select {
		case m := <-g.sendQ:
			if g.ctx.Err() != nil {
				return
			}
			node := m.to
			send := g.ml.Load().SendReliable
			if m.bestEffort {
				send = g.ml.Load().SendBestEffort
			}
			if err := send(&node, m.msg); err != nil {
				g.metrics.streams.WithLabelValues(m.t.String(), "error").Inc()
				g.log.Debug("gossip stream send failed", "to", m.to.Name, "type", m.t.String(), "error", err)
				continue
			}
			g.metrics.streams.WithLabelValues(m.t.String(), "ok").Inc()
		case <-g.ctx.Done():
			return
		}
	}
}

func (g *Gossip) kickMeta() {
	select {
	case g.metaKick <- struct{}{}:
	default:
	}
}

// metaLoop pushes this node's meta (version, epoch, flags) into memberlist's
// alive message whenever it changes. Kicks during an update coalesce.
func (g *Gossip) metaLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.metaKick:
		case <-g.ctx.Done():
			return
		}
		g.mu.Lock()
		leaving := g.local.leaving
		g.mu.Unlock()
		if leaving {
			continue // Leave sends the last update itself
		}
		// UpdateNode waits until the alive message was sent out; the timeout
		// only bounds the wait, the message stays queued.
		if err := g.ml.Load().UpdateNode(10 * g.cfg.GossipInterval); err != nil {
			g.log.Debug("gossip meta update still being sent", "error", err)
		}
	}
}

// maintain expires suspicions, pulls records announced by meta and not
// received, and forgets members past their timeouts.
func (g *Gossip) maintain() {
	defer g.wg.Done()
	tick := time.NewTicker(g.cfg.GossipInterval)
	defer tick.Stop()
	lastReap := time.Now()
	for {
		select {
		case <-tick.C:
		case <-g.ctx.Done():
			return
		}
		now := time.Now()
		type pull struct {
			to  memberlist.Node
			req pullRequest
		}
		var pulls []pull
		g.mu.Lock()
		changed := false
		for _, p := range g.peers {
			if p.known && p.status(now) != p.lastSeen {
				changed = true
			}
			if p.want > 0 && p.known && p.alive && !p.down && !now.Before(p.pullAt) {
				have := uint64(0)
				if p.rec != nil {
					have = p.rec.Version
				}
				if have >= p.want {
					p.want = 0
					continue
				}
				if len(pulls) >= maxPullsPerTick {
					continue // next tick: pulls are a repair path, not a flood
				}
				p.pullAt = now.Add(g.pullDelay(true))
				pulls = append(pulls, pull{to: p.node, req: pullRequest{From: g.cfg.NodeName, Node: p.name, Have: have}})
			}
		}
		if now.Sub(lastReap) >= time.Second {
			lastReap = now
			if g.reapLocked(now) {
				changed = true
			}
			for id, at := range g.seenQueries {
				if now.Sub(at) > 10*g.cfg.QueryTimeout {
					delete(g.seenQueries, id)
				}
			}
		}
		if changed {
			g.changedLocked()
		}
		g.mu.Unlock()
		for _, p := range pulls {
			g.sendAsync(p.to, msgPull, mustEncode(msgPull, &p.req))
		}
	}
}

// reapLocked forgets failed members after ReconnectTimeout, left members
// after TombstoneTimeout, and records of nodes memberlist never reported.
func (g *Gossip) reapLocked(now time.Time) bool {
	changed := false
	unknownTTL := 5 * g.cfg.PushPullInterval
	for name, p := range g.peers {
		switch {
		case !p.known:
			if now.Sub(p.recvAt) > unknownTTL {
				delete(g.peers, name)
			}
		case !p.alive:
			limit := g.cfg.ReconnectTimeout
			if p.status(now) == catalog.StatusLeft {
				limit = g.cfg.TombstoneTimeout
			}
			if now.Sub(p.deadAt) > limit {
				g.log.Info("gossip forgets member", "node", name, "status", string(p.status(now)), "since", p.deadAt)
				delete(g.peers, name)
				changed = true
			}
		}
	}
	return changed
}

// reconnectLoop periodically joins one failed member, so that the two sides
// of a healed partition merge again.
func (g *Gossip) reconnectLoop() {
	defer g.wg.Done()
	tick := time.NewTicker(g.cfg.ReconnectInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-g.ctx.Done():
			return
		}
		now := time.Now()
		g.mu.Lock()
		var cands []memberlist.Node
		for _, p := range g.peers {
			if p.known && !p.alive && p.status(now) == catalog.StatusFailed {
				cands = append(cands, p.node)
			}
		}
		g.mu.Unlock()
		if len(cands) == 0 {
			continue
		}
		n := cands[rand.IntN(len(cands))]
		addr := n.Name + "/" + net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
		if _, err := g.ml.Load().Join([]string{addr}); err != nil {
			g.log.Debug("gossip reconnect failed", "node", n.Name, "error", err)
		} else {
			g.log.Info("gossip reconnected to failed member", "node", n.Name)
		}
	}
}

// ---- events from memberlist ----

// onRefused records that a TCP connection to node was refused.
func (g *Gossip) onRefused(node string) {
	if g.cfg.DisableRefusalEvidence {
		return
	}
	now := time.Now()
	g.mu.Lock()
	p := g.peers[node]
	if p == nil || !p.known || !p.alive {
		g.mu.Unlock()
		return
	}
	p.refused = now
	// Someone's probe already failed: together with the refusal, that is
	// the evidence of a dead agent.
	var n *notice
	if p.suspect && now.Before(p.suspectUntil) && !p.down {
		n = g.markDownLocked(p, now)
	}
	g.mu.Unlock()
	if n != nil {
		g.queueNotice(msgDown, n)
	}
}

func (g *Gossip) onMemberlistEvent(ev mlEvent) {
	switch ev.kind {
	case evSuspect:
		g.onLocalSuspect(ev.node)
	case evRefute:
		g.mu.Lock()
		g.bumpEpochLocked()
		g.mu.Unlock()
		g.kickMeta()
	case evDecrypt:
		g.metrics.refused.WithLabelValues(refusedDecrypt).Inc()
	}
}

// onLocalSuspect runs when this node's probe of node failed.
func (g *Gossip) onLocalSuspect(node string) {
	now := time.Now()
	g.mu.Lock()
	p := g.peers[node]
	if p == nil || !p.known || !p.alive {
		g.mu.Unlock()
		return
	}
	var n *notice
	t := msgSuspect
	// The refusal comes from the TCP fallback of the same probe, at most one
	// (awareness-stretched) probe interval before the probe gives up.
	window := g.cfg.ProbeInterval * time.Duration(g.cfg.AwarenessMaxMultiplier+1)
	if !p.refused.IsZero() && now.Sub(p.refused) <= window {
		if !p.down {
			n = g.markDownLocked(p, now)
			t = msgDown
		}
	} else {
		p.suspect = true
		p.suspectEpoch = p.meta.Epoch
		p.suspectUntil = now.Add(g.maxSuspicion())
		n = &notice{Node: node, Epoch: p.meta.Epoch, From: g.cfg.NodeName}
		g.log.Info("gossip member suspected: probe failed", "node", node)
		g.changedLocked()
	}
	g.mu.Unlock()
	if n != nil {
		g.queueNotice(t, n)
	}
}

func (g *Gossip) markDownLocked(p *peer, now time.Time) *notice {
	p.down = true
	p.downEpoch = p.meta.Epoch
	g.metrics.down.Inc()
	g.log.Warn("gossip member failed: probe failed and its gossip port refused connections", "node", p.name)
	g.changedLocked()
	return &notice{Node: p.name, Epoch: p.meta.Epoch, From: g.cfg.NodeName}
}

func (g *Gossip) queueNotice(t msgType, n *notice) {
	prefix := "s/"
	if t == msgDown {
		prefix = "d/"
	}
	g.queue.QueueBroadcast(&namedBroadcast{name: prefix + n.Node, msg: mustEncode(t, n)})
}

func (g *Gossip) bumpEpochLocked() {
	e := uint64(time.Now().UnixNano())
	if e <= g.local.epoch {
		e = g.local.epoch + 1
	}
	g.local.epoch = e
}

// nodeEvent handles memberlist's join, update and leave notifications.
func (g *Gossip) nodeEvent(n *memberlist.Node, kind int) {
	if n.Name == g.cfg.NodeName {
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == stateClosed {
		return
	}
	p := g.peerLocked(n.Name)
	p.known = true
	p.node = *n
	p.node.Addr = append(net.IP(nil), n.Addr...)
	p.node.Meta = nil
	if len(n.Meta) > 0 {
		m, err := decodeMeta(n.Meta)
		if err != nil {
			g.metrics.refused.WithLabelValues(refusedDecode).Inc()
			g.log.Warn("gossip node meta refused", "node", n.Name, "error", err)
		} else {
			if m.Epoch > p.meta.Epoch {
				// A newer epoch refutes every notice about older ones.
				if p.suspect && p.suspectEpoch < m.Epoch {
					p.suspect = false
				}
				if p.down && p.downEpoch < m.Epoch {
					p.down = false
				}
				p.refused = time.Time{}
			}
			p.meta = m
		}
	}
	switch kind {
	case evJoin, evUpdate:
		if kind == evJoin {
			// memberlist saw it come (back) to life: every notice is stale.
			p.suspect, p.down = false, false
			p.refused = time.Time{}
		}
		if !p.alive {
			p.alive = true
			g.numAlive.Add(1)
		}
		have := uint64(0)
		if p.rec != nil {
			have = p.rec.Version
		}
		if p.meta.Version > have && p.meta.Version > p.want {
			p.want = p.meta.Version
			p.pullAt = now.Add(g.pullDelay(p.meta.Big))
		}
	case evLeave:
		if p.alive {
			p.alive = false
			g.numAlive.Add(-1)
		}
		p.deadAt = now
		p.suspect, p.down = false, false
		p.want = 0
		g.log.Info("gossip member gone", "node", n.Name, "status", string(p.status(now)))
	}
	g.changedLocked()
}

const (
	evJoin = iota
	evUpdate
	evLeave
)

// ---- messages ----

func (g *Gossip) handleMessage(b []byte) {
	m, err := decodeMessage(b)
	if err != nil {
		reason := refusedDecode
		if errors.Is(err, errInvalid) {
			reason = refusedInvalid
		}
		g.metrics.refused.WithLabelValues(reason).Inc()
		g.log.Warn("gossip message refused", "error", err)
		return
	}
	g.metrics.received.WithLabelValues(m.Type.String()).Inc()
	switch m.Type {
	case msgRecord:
		g.onRecord(m.Record)
	case msgPull:
		g.onPull(m.Pull)
	case msgSuspect, msgDown:
		g.onNotice(m.Type, m.Notice)
	case msgQuery:
		g.onQuery(m.Query, b)
	case msgQueryResp:
		g.onQueryResp(m.Resp)
	case msgState:
		g.mergeState(m.State)
	}
}

func (g *Gossip) onRecord(w *wireRecord) {
	now := time.Now()
	g.mu.Lock()
	if g.state == stateClosed {
		g.mu.Unlock()
		return
	}
	applied, outrun := g.applyRecordLocked(w, now)
	var self wireRecord
	if outrun {
		g.metrics.refused.WithLabelValues(refusedSelf).Inc()
		self = g.localWireLocked()
	}
	if applied && g.peers[w.Record.Node].known {
		g.changedLocked()
	}
	g.mu.Unlock()
	switch {
	case outrun:
		g.disseminate(self, "")
		g.kickMeta()
	case applied && w.Fwd:
		// Pushed over a stream: forward once to a few more members.
		fw := *w
		fw.From = g.cfg.NodeName
		msg := mustEncode(msgRecord, &fw)
		for _, to := range g.randomLive(g.cfg.StreamFanout, w.Record.Node, w.From) {
			g.sendAsync(to, msgRecord, msg)
		}
	case applied && w.From == "":
		// Received by broadcast: re-broadcast, so that news spreads from
		// every node that learns it, not only from its origin.
		g.queue.QueueBroadcast(&namedBroadcast{name: "r/" + w.Record.Node, msg: mustEncode(msgRecord, w)})
	}
}

func (g *Gossip) onPull(req *pullRequest) {
	g.mu.Lock()
	var w *wireRecord
	if req.Node == g.cfg.NodeName {
		if g.local.rec.Version > req.Have {
			lw := g.localWireLocked()
			w = &lw
		}
	} else if p := g.peers[req.Node]; p != nil && p.rec != nil && p.rec.Version > req.Have {
		w = &wireRecord{Record: *p.rec, Leaving: p.leaving}
	}
	to, ok := g.peers[req.From]
	var node memberlist.Node
	if ok && to.known {
		node = to.node
	}
	g.mu.Unlock()
	if w == nil || node.Name == "" {
		g.log.Debug("gossip pull not answered", "from", req.From, "node", req.Node, "have", req.Have, "known_requester", node.Name != "", "newer", w != nil)
		return
	}
	w.From = g.cfg.NodeName
	g.sendAsync(node, msgRecord, mustEncode(msgRecord, w))
}

func (g *Gossip) onNotice(t msgType, n *notice) {
	now := time.Now()
	g.mu.Lock()
	if n.Node == g.cfg.NodeName {
		// A notice about this node: refute it with a newer epoch.
		refute := n.Epoch >= g.local.epoch && !g.local.leaving
		if refute {
			g.bumpEpochLocked()
			g.log.Info("gossip refuting a notice about this node", "type", t.String(), "from", n.From)
		}
		g.mu.Unlock()
		if refute {
			g.kickMeta()
		}
		return
	}
	p := g.peers[n.Node]
	if p == nil || !p.known || !p.alive || n.Epoch < p.meta.Epoch {
		g.mu.Unlock()
		return
	}
	fresh := false
	switch t {
	case msgSuspect:
		if p.down || (p.suspect && p.suspectEpoch >= n.Epoch && now.Before(p.suspectUntil)) {
			break
		}
		p.suspect = true
		p.suspectEpoch = n.Epoch
		p.suspectUntil = now.Add(g.maxSuspicion())
		fresh = true
	case msgDown:
		if p.down && p.downEpoch >= n.Epoch {
			break
		}
		p.down = true
		p.downEpoch = n.Epoch
		fresh = true
		g.log.Info("gossip member failed, as reported", "node", n.Node, "by", n.From)
	}
	if fresh {
		g.changedLocked()
	}
	g.mu.Unlock()
	if fresh {
		g.queueNotice(t, n)
	}
}

// mergeState applies the records of a push/pull exchange.
func (g *Gossip) mergeState(s *pushState) {
	now := time.Now()
	var outrun bool
	var self wireRecord
	g.mu.Lock()
	if g.state == stateClosed {
		g.mu.Unlock()
		return
	}
	changed := false
	for i := range s.Records {
		w := &s.Records[i]
		if err := w.check(); err != nil {
			g.metrics.refused.WithLabelValues(refusedInvalid).Inc()
			g.log.Warn("gossip record refused", "node", w.Record.Node, "error", err)
			continue
		}
		a, o := g.applyRecordLocked(w, now)
		if a && g.peers[w.Record.Node].known {
			changed = true
		}
		if o {
			outrun = true
		}
	}
	if outrun {
		g.metrics.refused.WithLabelValues(refusedSelf).Inc()
		self = g.localWireLocked()
	}
	if changed {
		g.changedLocked()
	}
	g.mu.Unlock()
	if outrun {
		g.disseminate(self, "")
		g.kickMeta()
	}
}

// localState is the user part of a push/pull: the records of this node and
// of every live member.
func (g *Gossip) localState() []byte {
	g.mu.Lock()
	s := pushState{Records: make([]wireRecord, 0, len(g.peers)+1)}
	s.Records = append(s.Records, g.localWireLocked())
	for _, p := range g.peers {
		if p.rec != nil && p.known && p.alive {
			s.Records = append(s.Records, wireRecord{Record: *p.rec, Leaving: p.leaving})
		}
	}
	g.mu.Unlock()
	return mustEncode(msgState, &s)
}

func (g *Gossip) nodeMeta() []byte {
	g.mu.Lock()
	m := nodeMeta{
		Version: g.local.rec.Version,
		Epoch:   g.local.epoch,
		Server:  g.local.rec.Server,
		Leaving: g.local.leaving,
		Big:     g.local.big,
	}
	g.mu.Unlock()
	return encodeMeta(&m)
}

// namedBroadcast replaces any queued broadcast of the same name: a newer
// record of a node supersedes the older one still waiting.
type namedBroadcast struct {
	name string
	msg  []byte
}

func (b *namedBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(*namedBroadcast)
	return ok && nb.name == b.name
}
func (b *namedBroadcast) Name() string    { return b.name }
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       {}

func cloneRecord(r catalog.Record) catalog.Record {
	r.Meta = cloneMap(r.Meta)
	if r.Services != nil {
		svcs := make([]catalog.Service, len(r.Services))
		for i, s := range r.Services {
			s.Ports = append([]catalog.Port(nil), s.Ports...)
			s.Tags = append([]string(nil), s.Tags...)
			s.Meta = cloneMap(s.Meta)
			svcs[i] = s
		}
		r.Services = svcs
	}
	return r
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
