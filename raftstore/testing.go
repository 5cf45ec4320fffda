package raftstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/policy"
)

// TestNetwork selects the network a test cluster runs on.
type TestNetwork int

const (
	// NetTCP runs every server on a loopback TCP port with mutual TLS:
	// Raft and RPC share the port, as in production.
	NetTCP TestNetwork = iota
	// NetTwin runs every server on the in-process network twin
	// (internal/testnet), Raft and RPC sharing the port with mutual TLS as
	// on TCP: no socket at all, and the twin's faults (TestCluster.Twin)
	// act on it.
	NetTwin
)

// twinPort is the server port of every server on the twin.
const twinPort = 7947

// TestOptions tune MakeTestCluster.
type TestOptions struct {
	// Network is NetTCP unless set.
	Network TestNetwork
	// Configure, when set, edits each server's Config before it starts.
	Configure func(*Config)
	// Logger receives every node's logs. Default: discard, or text on
	// stderr when MESHWORK_TEST_LOG is set.
	Logger *slog.Logger
	// LogStore, when set, opens every server's Raft log (Deps.LogStore);
	// each TestNode keeps its own copy, which Restart uses.
	LogStore LogOpener
	// ServerKey gives every server a server key (Config.ServerKey), the
	// same on all; client agents get none. Default: false, or true when
	// MESHWORK_TEST_SERVER_KEY is set, to run a package's tests again with
	// server keys.
	ServerKey bool
}

// serverKeyEnv turns TestOptions.ServerKey on for every test cluster.
const serverKeyEnv = "MESHWORK_TEST_SERVER_KEY"

// TestCluster is a cluster of server (and client) agents in one process,
// with fast timers, for tests of this package and of any package built on
// it. Kill, Restart, Partition and Heal act on its servers.
type TestCluster struct {
	t    testing.TB
	opts TestOptions
	// Key is the cluster key every node shares.
	Key []byte
	// ServerKey is the server key every server holds (TestOptions.ServerKey);
	// nil for none.
	ServerKey []byte
	// Disc is the discovery every node reads; Kill and Restart keep the
	// statuses in it as gossip would.
	Disc *StaticDiscovery
	net  *testNet
	base string

	mu      sync.Mutex
	servers []*TestNode
	clients []*TestNode
}

// TestNode is one agent of a TestCluster.
type TestNode struct {
	Name    string
	Addr    string
	DataDir string
	Config  Config
	// Node is nil while the agent is killed.
	Node *Node
	// LogStore opens the server's Raft log at its next start (nil: the
	// default). It starts as TestOptions.LogStore.
	LogStore LogOpener
}

// MakeTestCluster starts n servers (1, 3 or 5) that bootstrap together, and
// waits for a leader. Everything is closed by t.Cleanup.
func MakeTestCluster(t testing.TB, n int, opts ...TestOptions) *TestCluster {
	t.Helper()
	var o TestOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Logger == nil {
		if os.Getenv("MESHWORK_TEST_LOG") != "" {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			o.Logger = slog.New(slog.DiscardHandler)
		}
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	// The base directory is made before Close is registered, so that the
	// nodes are closed before their directories are removed.
	c := &TestCluster{t: t, opts: o, Key: key, Disc: NewStaticDiscovery(), net: newTestNet(o.Network), base: t.TempDir()}
	if o.ServerKey || os.Getenv(serverKeyEnv) != "" {
		c.ServerKey = make([]byte, 32)
		_, _ = rand.Read(c.ServerKey)
	}
	t.Cleanup(c.Close)
	for i := 0; i < n; i++ {
		c.servers = append(c.servers, c.newServerNode(fmt.Sprintf("s%d", i+1), n))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, s := range c.servers {
		wg.Add(1)
		go func() { // start all at the same moment: bootstrap must still happen once
			defer wg.Done()
			errs[i] = c.start(s)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("start test cluster: %v", err)
		}
	}
	c.Leader()
	return c
}

func (c *TestCluster) newServerNode(name string, expect int) *TestNode {
	tn := &TestNode{Name: name, DataDir: c.dir(name), LogStore: c.opts.LogStore}
	tn.Addr = c.net.reserve(c.t, name)
	tn.Config = Config{
		NodeName:            name,
		DataDir:             tn.DataDir,
		ClusterKey:          c.Key,
		ServerKey:           c.ServerKey,
		Server:              true,
		BootstrapExpect:     expect,
		BindAddr:            tn.Addr,
		AdvertiseAddr:       tn.Addr,
		Timing:              FastTiming,
		AutopilotInterval:   200 * time.Millisecond,
		StabilizationTime:   time.Second,
		WatchHeartbeat:      500 * time.Millisecond,
		SnapshotThreshold:   1024,
		DeadServerThreshold: time.Hour,
	}
	if c.opts.Configure != nil {
		c.opts.Configure(&tn.Config)
	}
	return tn
}

func (c *TestCluster) dir(name string) string {
	d, err := os.MkdirTemp(c.base, name+"-")
	if err != nil {
		c.t.Fatalf("data dir: %v", err)
	}
	return d
}

// start (re)creates the node of tn and starts it.
func (c *TestCluster) start(tn *TestNode) error {
	deps := Deps{
		Logger:    c.opts.Logger.With("node", tn.Name),
		Discovery: c.Disc,
		Dial:      c.net.dialer(tn.Name),
		LogStore:  tn.LogStore,
	}
	if tn.Config.Server {
		ln, err := c.net.listen(tn.Name, tn.Addr)
		if err != nil {
			return err
		}
		deps.Listener = ln
	}
	n, err := New(tn.Config, deps)
	if err != nil {
		return err
	}
	if err := n.Start(context.Background()); err != nil {
		return err
	}
	c.mu.Lock()
	tn.Node = n
	c.mu.Unlock()
	if tn.Config.Server {
		c.Disc.Update(tn.Name, func(s *ServerInfo) {
			s.Addr, s.Status, s.Expect = tn.Addr, catalog.StatusAlive, tn.Config.BootstrapExpect
		})
	}
	return nil
}

// Close closes every node. It is idempotent.
func (c *TestCluster) Close() {
	c.mu.Lock()
	all := append(append([]*TestNode(nil), c.clients...), c.servers...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, tn := range all {
		if n := tn.Node; n != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = n.Close()
			}()
		}
	}
	wg.Wait()
}

// Servers returns the server agents, killed ones included.
func (c *TestCluster) Servers() []*TestNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*TestNode(nil), c.servers...)
}

// Server returns server i (0-based).
func (c *TestCluster) Server(i int) *TestNode { return c.Servers()[i] }

// Index returns the position of tn among the servers.
func (c *TestCluster) Index(tn *TestNode) int {
	for i, s := range c.Servers() {
		if s == tn {
			return i
		}
	}
	return -1
}

// Leader waits until the live servers of one side agree on a leader that
// is one of them, and returns it. It fails the test after 30s.
func (c *TestCluster) Leader() *TestNode {
	c.t.Helper()
	var leader *TestNode
	testnet.Eventually(c.t, 30*time.Second, "one leader", func() error {
		if leader = c.currentLeader(); leader == nil {
			return errors.New("no server leads with the others' agreement")
		}
		return nil
	})
	return leader
}

func (c *TestCluster) currentLeader() *TestNode {
	var leaders []*TestNode
	for _, s := range c.Servers() {
		if s.Node != nil && s.Node.srv != nil && s.Node.srv.raft.State() == raft.Leader {
			leaders = append(leaders, s)
		}
	}
	// During a partition an old leader may not have stepped down yet:
	// take the one whose term is highest, once followers agree with it.
	var best *TestNode
	for _, l := range leaders {
		if best == nil || l.Node.srv.raft.CurrentTerm() > best.Node.srv.raft.CurrentTerm() {
			best = l
		}
	}
	if best == nil {
		return nil
	}
	for _, s := range c.Servers() {
		if s.Node == nil || s == best || !c.net.connected(s.Name, best.Name) || c.net.isStalled(s.Name) {
			continue
		}
		if _, id := s.Node.srv.raft.LeaderWithID(); string(id) != best.Name {
			return nil
		}
	}
	return best
}

// Kill stops server i abruptly, as kill -9 would from the cluster's point of
// view: it does not leave, and gossip marks it failed.
func (c *TestCluster) Kill(i int) {
	c.t.Helper()
	tn := c.Server(i)
	c.mu.Lock()
	n := tn.Node
	tn.Node = nil
	c.mu.Unlock()
	if n == nil {
		return
	}
	_ = n.Close()
	c.Disc.Update(tn.Name, func(s *ServerInfo) { s.Status = catalog.StatusFailed })
}

// Restart starts a killed server again from its data directory, at the
// same address.
func (c *TestCluster) Restart(i int) {
	c.t.Helper()
	tn := c.Server(i)
	if tn.Node != nil {
		c.Kill(i)
	}
	var err error
	// The port may linger for a moment after the old listener closed.
	testnet.Eventually(c.t, 10*time.Second, "the port of "+tn.Name+" to be free for its restart", func() error {
		if err = c.start(tn); errors.Is(err, errAddrInUse) {
			return err
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("restart %s: %v", tn.Name, err)
	}
}

// AddServer starts a new server that joins the existing cluster (it does
// not bootstrap); autopilot adds it as a non-voter and promotes it.
func (c *TestCluster) AddServer(name string) *TestNode {
	c.t.Helper()
	tn := c.newServerNode(name, 0)
	c.mu.Lock()
	c.servers = append(c.servers, tn)
	c.mu.Unlock()
	if err := c.start(tn); err != nil {
		c.t.Fatalf("add server %s: %v", name, err)
	}
	return tn
}

// AddClient starts a client agent that reaches the servers over RPC.
func (c *TestCluster) AddClient(name string) *TestNode {
	c.t.Helper()
	tn := &TestNode{Name: name, DataDir: c.dir(name)}
	tn.Config = Config{NodeName: name, DataDir: tn.DataDir, ClusterKey: c.Key, WatchHeartbeat: 500 * time.Millisecond, StaleAfter: 2 * time.Second}
	c.mu.Lock()
	c.clients = append(c.clients, tn)
	c.mu.Unlock()
	if err := c.start(tn); err != nil {
		c.t.Fatalf("add client %s: %v", name, err)
	}
	return tn
}

// StopClient closes a client agent (its policy stays on disk).
func (c *TestCluster) StopClient(tn *TestNode) {
	c.mu.Lock()
	n := tn.Node
	tn.Node = nil
	c.mu.Unlock()
	if n != nil {
		_ = n.Close()
	}
}

// StartClient starts a stopped client agent again from its data directory.
func (c *TestCluster) StartClient(tn *TestNode) {
	c.t.Helper()
	if err := c.start(tn); err != nil {
		c.t.Fatalf("start client %s: %v", tn.Name, err)
	}
}

// Partition cuts the network between the given groups of servers (by
// index). Client agents stay connected to every server. Heal undoes it.
func (c *TestCluster) Partition(groups ...[]int) {
	names := map[string]int{}
	for g, list := range groups {
		for _, i := range list {
			names[c.Server(i).Name] = g + 1
		}
	}
	c.net.partition(names)
}

// Heal reconnects every server.
func (c *TestCluster) Heal() { c.net.partition(nil) }

// Twin is the network twin the cluster runs on with NetTwin, for faults
// finer than Partition (delay, loss); nil on TCP. Partition and Isolate
// set its links too.
func (c *TestCluster) Twin() *testnet.Network { return c.net.twin }

// Isolate cuts a client agent (or server) by name from every server.
func (c *TestCluster) Isolate(name string, cut bool) { c.net.isolate(name, cut) }

// Stall freezes every connection of the agent called name (on) or lets
// them go again (off), as SIGSTOP and SIGCONT would, or a firewall that
// drops packets without a reset: connections stay open and new ones are
// accepted, but nothing the agent sends or is sent is delivered until the
// stall ends (then all of it is, in order) or the reader's deadline passes.
// The agent itself keeps running. Gossip is not told: the Disc statuses stay as they are.
func (c *TestCluster) Stall(name string, on bool) { c.net.setGate(c.net.stalled, name, on) }

// Deafen holds every answer the agent called name receives on the
// connections it opened (on), so its calls reach the servers but it hears
// nothing back, until Deafen(name, false) delivers the answers.
func (c *TestCluster) Deafen(name string, on bool) { c.net.setGate(c.net.deaf, name, on) }

// ApplyDoc is a helper that parses src and applies it through node n.
func ApplyDoc(ctx context.Context, n *Node, src string) (uint64, error) {
	docs, err := policy.Parse([]byte(src))
	if err != nil {
		return 0, err
	}
	return n.ApplyDocuments(ctx, docs, nil)
}

// testNet is the network of a test cluster: it refuses dials across a
// partition and closes the connections that cross one when it is made.
type testNet struct {
	mode TestNetwork

	mu       sync.Mutex
	group    map[string]int  // node -> partition group; absent = everywhere
	cut      map[string]bool // isolated nodes
	addrNode map[string]string
	conns    map[*trackedConn]struct{}
	// twin is the network with NetTwin, nil on TCP; known holds every
	// node that has a host on it, whose links follow group and cut.
	twin  *testnet.Network
	known map[string]bool
	held  map[string]net.Listener // reserved TCP ports, until first listened on
	// stalled and deaf hold traffic (see Stall and Deafen): node -> a
	// channel closed when the hold ends.
	stalled map[string]chan struct{}
	deaf    map[string]chan struct{}
}

var errAddrInUse = errors.New("address in use")

func newTestNet(mode TestNetwork) *testNet {
	var twin *testnet.Network
	if mode == NetTwin {
		twin = testnet.New(testnet.Options{})
	}
	return &testNet{mode: mode, twin: twin, group: map[string]int{}, cut: map[string]bool{}, addrNode: map[string]string{},
		conns: map[*trackedConn]struct{}{}, known: map[string]bool{},
		held: map[string]net.Listener{}, stalled: map[string]chan struct{}{}, deaf: map[string]chan struct{}{}}
}

// reserve picks the address of a server. A TCP port stays bound until the
// server first listens on it, so that no other test's socket takes it in
// between.
func (tn *testNet) reserve(t testing.TB, name string) string {
	var addr string
	var ln net.Listener
	if tn.twin != nil {
		addr = tn.twin.Host(name).Addr(twinPort)
	} else {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatalf("reserve port: %v", err)
		}
		addr = ln.Addr().String()
		t.Cleanup(func() { // if never listened on
			tn.mu.Lock()
			defer tn.mu.Unlock()
			if tn.held[addr] == ln {
				delete(tn.held, addr)
				ln.Close()
			}
		})
	}
	tn.mu.Lock()
	tn.addrNode[addr] = name
	if ln != nil {
		tn.held[addr] = ln
	}
	tn.mu.Unlock()
	tn.join(name)
	return addr
}

func (tn *testNet) listen(name, addr string) (net.Listener, error) {
	if tn.twin != nil {
		ln, err := tn.twin.Host(name).Listen(twinPort)
		if errors.Is(err, testnet.ErrPortInUse) {
			return nil, fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return ln, err
	}
	tn.mu.Lock()
	ln, ok := tn.held[addr]
	delete(tn.held, addr)
	tn.mu.Unlock()
	if ok {
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errAddrInUse, err)
	}
	return ln, nil
}

func (tn *testNet) connected(a, b string) bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.connectedLocked(a, b)
}

func (tn *testNet) connectedLocked(a, b string) bool {
	if tn.cut[a] || tn.cut[b] {
		return false
	}
	ga, oka := tn.group[a]
	gb, okb := tn.group[b]
	return !oka || !okb || ga == gb
}

// join gives name a host on the twin, whose links follow the partition.
func (tn *testNet) join(name string) {
	if tn.twin == nil {
		return
	}
	tn.twin.Host(name)
	tn.mu.Lock()
	tn.known[name] = true
	tn.mu.Unlock()
	tn.syncTwin()
}

// syncTwin cuts the twin's links between the nodes that group and cut
// separate, and mends the others. The cut rejects dials at once, as
// partitions on TCP do here, so that a server learns in time that it
// reaches no leader.
func (tn *testNet) syncTwin() {
	if tn.twin == nil {
		return
	}
	tn.mu.Lock()
	var names []string
	for n := range tn.known {
		names = append(names, n)
	}
	cut := map[[2]string]bool{}
	for _, a := range names {
		for _, b := range names {
			if a != b {
				cut[[2]string{a, b}] = !tn.connectedLocked(a, b)
			}
		}
	}
	tn.mu.Unlock()
	for k, c := range cut {
		l := tn.twin.LinkOf(k[0], k[1])
		if l.Cut != c {
			l.Cut, l.Reject = c, c
			tn.twin.SetLink(k[0], k[1], l)
		}
	}
}

func (tn *testNet) dialer(from string) DialFunc {
	tn.join(from)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		tn.mu.Lock()
		to := tn.addrNode[addr]
		if tn.twin == nil && !tn.connectedLocked(from, to) {
			tn.mu.Unlock()
			return nil, fmt.Errorf("dial %s: network partitioned (test)", addr)
		}
		tn.mu.Unlock()
		var c net.Conn
		var err error
		if tn.twin != nil {
			// The twin itself keeps partitioned nodes apart: the dial
			// hangs until ctx ends, as to a silent host.
			c, err = tn.twin.Host(from).Dial(ctx, network, addr)
		} else {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		if err != nil {
			return nil, err
		}
		return tn.track(from, to, c), nil
	}
}

type trackedConn struct {
	net.Conn
	from, to string
	tn       *testNet
	once     sync.Once
	closed   chan struct{}

	dlMu   sync.Mutex
	readDL time.Time

	// Writes during a hold are queued, as a kernel's send buffer takes
	// them, and delivered in order when it ends.
	wmu      sync.Mutex
	queued   []byte
	flushing bool
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.tn.mu.Lock()
		delete(c.tn.conns, c)
		c.tn.mu.Unlock()
		close(c.closed)
	})
	return c.Conn.Close()
}

// Read delivers data only outside a hold: data that arrives during one
// waits for its end.
func (c *trackedConn) Read(b []byte) (int, error) {
	if err := c.hold(true, true); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		if herr := c.hold(true, true); herr != nil {
			return 0, herr
		}
	}
	return n, err
}

// Write queues b during a hold (the peer gets it when the hold ends), and
// after one until the queue is delivered, so that order is kept.
func (c *trackedConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.tn.mu.Lock()
	g := c.tn.gateLocked(c, false)
	c.tn.mu.Unlock()
	if g == nil && len(c.queued) == 0 {
		return c.Conn.Write(b)
	}
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.queued = append(c.queued, b...)
	if !c.flushing {
		c.flushing = true
		go c.flushAfterHold()
	}
	return len(b), nil
}

func (c *trackedConn) flushAfterHold() {
	for {
		if c.hold(false, false) != nil {
			return
		}
		c.wmu.Lock()
		c.tn.mu.Lock()
		g := c.tn.gateLocked(c, false)
		c.tn.mu.Unlock()
		if g != nil { // held again
			c.wmu.Unlock()
			continue
		}
		data := c.queued
		c.queued, c.flushing = nil, false
		if len(data) > 0 {
			_, _ = c.Conn.Write(data)
		}
		c.wmu.Unlock()
		return
	}
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	c.dlMu.Lock()
	c.readDL = t
	c.dlMu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	c.readDL = t
	c.dlMu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// hold waits while a stall (or, for a read, deafness) holds this
// connection, until it ends, the connection closes or (withDeadline) the
// read deadline passes.
func (c *trackedConn) hold(read, withDeadline bool) error {
	for {
		c.tn.mu.Lock()
		g := c.tn.gateLocked(c, read)
		c.tn.mu.Unlock()
		if g == nil {
			return nil
		}
		var dl time.Time
		if withDeadline {
			c.dlMu.Lock()
			dl = c.readDL
			c.dlMu.Unlock()
		}
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			expired = t.C
			defer t.Stop()
		}
		select {
		case <-g:
		case <-c.closed:
			return net.ErrClosed
		case <-expired:
			return os.ErrDeadlineExceeded
		}
	}
}

// gateLocked returns the channel to wait on before c may carry data, or
// nil when nothing holds it.
func (tn *testNet) gateLocked(c *trackedConn, read bool) <-chan struct{} {
	if g := tn.stalled[c.from]; g != nil {
		return g
	}
	if g := tn.stalled[c.to]; g != nil {
		return g
	}
	if read {
		return tn.deaf[c.from]
	}
	return nil
}

func (tn *testNet) setGate(gates map[string]chan struct{}, name string, on bool) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if g := gates[name]; g != nil && !on {
		close(g)
		delete(gates, name)
	} else if g == nil && on {
		gates[name] = make(chan struct{})
	}
}

func (tn *testNet) isStalled(name string) bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.stalled[name] != nil
}

func (tn *testNet) track(from, to string, c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, from: from, to: to, tn: tn, closed: make(chan struct{})}
	tn.mu.Lock()
	tn.conns[tc] = struct{}{}
	tn.mu.Unlock()
	return tc
}

// dropCrossing closes connections between nodes no longer connected.
// Called with tn.mu held; closes outside it.
func (tn *testNet) dropCrossingLocked() []net.Conn {
	var drop []net.Conn
	for c := range tn.conns {
		if !tn.connectedLocked(c.from, c.to) {
			drop = append(drop, c)
			delete(tn.conns, c)
		}
	}
	return drop
}

func (tn *testNet) partition(groups map[string]int) {
	tn.mu.Lock()
	tn.group = map[string]int{}
	for k, v := range groups {
		tn.group[k] = v
	}
	drop := tn.dropCrossingLocked()
	tn.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
	tn.syncTwin()
}

func (tn *testNet) isolate(name string, cut bool) {
	tn.mu.Lock()
	if cut {
		tn.cut[name] = true
	} else {
		delete(tn.cut, name)
	}
	drop := tn.dropCrossingLocked()
	tn.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
	tn.syncTwin()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
