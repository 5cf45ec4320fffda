package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
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
	// Clock drives this layer's own timers and timestamps: suspicion
	// windows, pulls, reaping, rejoin and reconnect attempts, the peers
	// file, record versions. Nil means clock.Real. (memberlist keeps its own
	// wall-clock timers.)
	Clock clock.Clock
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
	clock    clock.Clock

	ml      atomic.Pointer[memberlist.Memberlist]
	keyring *memberlist.Keyring // nil when gossip is not encrypted
	// configuredKey is Config.Keyring's primary, the agent's configured
	// encrypt, which a keyring file may override (keyring.go); nil for none.
	configuredKey []byte
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
	// peersFileMu serialises writes of PeersFile and guards lastPeers, the
	// membership last written (see peersSignature), and lastPeersErr, the
	// last write error logged.
	peersFileMu  sync.Mutex
	lastPeers    string
	lastPeersErr string

	// mu guards everything below. It is never held while calling into
	// memberlist, because memberlist calls the delegates (which take mu)
	// while holding its own node lock.
	mu          sync.Mutex
	state       int
	local       localState
	peers       *peerTable
	queries     map[uint64]*pendingQuery
	seenQueries map[uint64]time.Time

	metaKick    chan struct{}
	publishKick chan struct{}
	peersKick   chan struct{} // membership may have changed: rejoin and the peers file look
	contactKick chan struct{}
	dirty       bool // a change not yet published, see changedLocked
	sendQ       chan outMsg
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup

	// syncStep is where this member is on the way to its first full state
	// from another member (syncNone, syncPending, syncDone), under mu;
	// synced is closed when it gets there (Synced).
	syncStep int
	synced   chan struct{}
}

// sleep waits d on the injected clock. It returns false, at once, when the
// member is closing.
func (g *Gossip) sleep(d time.Duration) bool {
	done, t := clock.After(g.clock, d)
	select {
	case <-done:
		return true
	case <-g.ctx.Done():
		t.Stop()
		return false
	}
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
	clk := deps.Clock
	if clk == nil {
		clk = clock.Real
	}
	g := &Gossip{
		cfg:         cfg,
		log:         logger,
		store:       deps.Store,
		deps:        deps,
		clock:       clk,
		peers:       newPeerTable(cfg.NodeName, timeoutsOf(&cfg)),
		queries:     make(map[uint64]*pendingQuery),
		seenQueries: make(map[uint64]time.Time),
		metaKick:    make(chan struct{}, 1),
		publishKick: make(chan struct{}, 1),
		peersKick:   make(chan struct{}, 1),
		contactKick: make(chan struct{}, 1),
		synced:      make(chan struct{}),
		sendQ:       make(chan outMsg, 256),
		lastPeers:   "(not written yet)", // no signature: the first look writes
	}
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(g.peers.numAlive.Load()) + 1 },
		RetransmitMult: cfg.RetransmitMult,
	}
	m, err := newMetrics(reg, g.queue.NumQueued, g.Stats)
	if err != nil {
		return nil, fmt.Errorf("gossip: new: metrics: %w", err)
	}
	g.metrics = m
	now := uint64(clk.Now().UnixNano())
	g.local = localState{
		rec:   catalog.Record{Node: cfg.NodeName, Version: now},
		epoch: now,
	}
	return g, nil
}

// Start reads the keyring and peers files, binds the transport (unless one
// was injected), creates the memberlist, and returns once this node listens.
// Joining happens in the background (join.go): RetryJoin and the peers
// remembered in PeersFile are tried, with backoff, until this node is in
// contact with the cluster, and again whenever it loses contact.
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

	g.loadPeersFile()

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
	g.mu.Lock()
	if g.local.rec.Addr == "" {
		// Before memberlist starts: a member that joins at once gets this
		// record in the push/pull, and refuses it without an address.
		g.local.rec.Addr = ip.String()
	}
	g.mu.Unlock()
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
	g.publishLocked()
	self := g.localWireLocked()
	g.mu.Unlock()
	// Queued now, sent to the first members this node learns of; each of them
	// passes it on.
	g.disseminate(self, "")

	g.log.Info("gossip started", "node", g.cfg.NodeName, "addr", g.Addr(), "encrypted", g.keyring != nil)

	const senders = 4
	g.wg.Add(5 + senders)
	go g.publisher()
	go g.maintain()
	go g.metaLoop()
	go g.rejoinLoop()
	go g.reconnectLoop()
	for range senders {
		go g.sender()
	}
	if g.cfg.PeersFile != "" {
		g.wg.Add(1)
		go g.peersFileLoop()
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

	// memberlist waits in wall-clock time, so the deadline does too.
	deadline := time.Now().Add(timeout)
	ml := g.ml.Load()
	g.disseminate(w, "")
	// A broadcast reaches each member only with high probability, and one
	// that misses the leaving flag would show this node as failed.
	g.tellEveryLive(w)
	// The meta update carries the leaving flag in memberlist's own alive
	// message; wait for it to go out before memberlist's leave message.
	if err := ml.UpdateNode(timeout / 2); err != nil {
		g.log.Debug("gossip leave: meta update not fully sent", "err", err)
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
// fail, unless Leave was called first): it ends pending keyring queries,
// stops the loops, shuts memberlist down, waits for every goroutine, and
// then writes the peers file a last time. It is idempotent.
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
	// The last membership this node saw, for its next start.
	g.writePeersFile()
	if err != nil {
		return fmt.Errorf("gossip: close: %w", err)
	}
	return nil
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
