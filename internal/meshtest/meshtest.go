// Package meshtest starts clusters of gossip members (or whole agents) in one
// process, with fast timers and fault injection, for tests:
//
//	c := meshtest.NewCluster(t, 5, meshtest.Options{})
//	c.WaitConverged(10 * time.Second)
//	c.Partition([]int{0}, []int{1, 2, 3, 4})
//	c.Kill(3)
//
// The nodes run on the in-process network twin of internal/testnet (the
// default), which also carries the Raft and tunnel sockets of whole agents
// (NodeSpec.Host), or on real UDP and TCP sockets on 127.0.0.1 (Options.Loopback).
// Every fault is applied at the network, so the code under test is the
// production code. Tests wait with testnet.Eventually.
package meshtest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
)

// Member is one node of a cluster: a gossip layer alone (the default) or a
// whole agent built by Options.NewMember. The cluster calls Start once,
// then Leave and/or Close; Close must be idempotent.
type Member interface {
	Start(ctx context.Context) error
	Leave(timeout time.Duration) error
	Close() error
	// Catalog is the store the member publishes its catalog into.
	Catalog() *catalog.Store
}

// NodeSpec is what the cluster gives each member it builds.
type NodeSpec struct {
	Index int
	Name  string
	// Transport is the member's gossip transport on the cluster's network.
	Transport memberlist.Transport
	// Host is the member's place on the network twin, where a whole agent
	// opens its Raft port (Host.Listen), dials servers (Host.Dial) and
	// opens its tunnel socket (Host.ListenPacket), so that the cluster's
	// faults cut those planes too. Nil with Options.Loopback.
	Host *testnet.Host
	// Join holds the addresses to join at start: the first node's, empty
	// for the first node itself.
	Join []string
	// Earlier holds the addresses of every node added before this one, for
	// tests that need membership complete after the joins alone.
	Earlier    []string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// DataDir is a private, empty directory for the member's files. It
	// survives Restart.
	DataDir string
}

// Options configure a cluster.
type Options struct {
	// Loopback puts the nodes on real sockets on 127.0.0.1 instead of the
	// in-memory network.
	Loopback bool
	// Config adjusts a node's gossip config, which starts as
	// gossip.FastTestConfig(name) joining the first node and remembering
	// its peers in peers.json in its data dir. It is called at every start,
	// restarts included. Unused with NewMember.
	Config func(spec NodeSpec, c *gossip.Config)
	// NewMember builds node i instead of a bare gossip layer, for tests of
	// the whole agent.
	NewMember func(t testing.TB, spec NodeSpec) (Member, error)
	// LogLevel is the level captured in each node's Logs. Default Info.
	LogLevel slog.Level
}

// Node is one node of a cluster.
type Node struct {
	Index int
	Name  string
	// Member is the running member; Gossip is the same member when it is a
	// bare gossip layer, nil otherwise.
	Member   Member
	Gossip   *gossip.Gossip
	Registry *prometheus.Registry
	// Logs captures everything the member logged.
	Logs    *LogBuffer
	DataDir string
	stopped bool
}

// Store is the node's catalog.
func (n *Node) Store() *catalog.Store { return n.Member.Catalog() }

// Snapshot is the node's current catalog.
func (n *Node) Snapshot() *catalog.Snapshot { return n.Member.Catalog().Current() }

// Stopped reports whether the node was killed or left.
func (n *Node) Stopped() bool { return n.stopped }

// Cluster is a set of nodes on one network.
type Cluster struct {
	t     testing.TB
	opts  Options
	root  string // holds the nodes' data dirs
	Net   Network
	Nodes []*Node
	mu    sync.Mutex
}

// gossipMember adapts *gossip.Gossip to Member.
type gossipMember struct {
	*gossip.Gossip
	store *catalog.Store
}

func (m gossipMember) Catalog() *catalog.Store { return m.store }

// NewCluster starts n nodes named node-0 … node-(n-1); nodes 1… join
// node 0 in the background. Everything is stopped at the end of the test.
// It does not wait for convergence: call WaitConverged.
func NewCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	// The data dirs live under one directory made before closeAll is
	// registered, so that it is removed after every node stopped writing
	// (cleanups run last in, first out).
	c := &Cluster{t: t, opts: opts, root: t.TempDir()}
	if opts.Loopback {
		ln := NewLoopbackNetwork()
		c.Net = ln
		t.Cleanup(ln.Close)
	} else {
		mn := NewMemNetwork()
		c.Net = mn
		t.Cleanup(mn.Close)
	}
	t.Cleanup(c.closeAll)
	for range n {
		c.AddNode()
	}
	return c
}

// AddNode starts one more node, joining node 0.
func (c *Cluster) AddNode() *Node {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.Nodes)
	dir, err := os.MkdirTemp(c.root, fmt.Sprintf("node-%d-", i))
	if err != nil {
		c.t.Fatalf("meshtest: data dir: %v", err)
	}
	node := &Node{Index: i, Name: fmt.Sprintf("node-%d", i), DataDir: dir}
	c.Nodes = append(c.Nodes, node)
	c.mu.Unlock()
	c.startNode(node)
	return node
}

func (c *Cluster) startNode(node *Node) {
	c.t.Helper()
	tr, err := c.Net.NewTransport(node.Name)
	if err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	var earlier []string
	for _, n := range c.Nodes[:node.Index] {
		earlier = append(earlier, c.Net.Addr(n.Name))
	}
	first := min(len(earlier), 1)
	join := earlier[:first:first] // node 0's; capped, so an append cannot overwrite Earlier
	node.Logs = &LogBuffer{}
	node.Registry = prometheus.NewRegistry()
	spec := NodeSpec{
		Index:      node.Index,
		Name:       node.Name,
		Transport:  tr,
		Host:       c.host(node.Name),
		Join:       join,
		Earlier:    earlier,
		Logger:     slog.New(slog.NewTextHandler(node.Logs, &slog.HandlerOptions{Level: c.opts.LogLevel})),
		Registerer: node.Registry,
		DataDir:    node.DataDir,
	}
	var m Member
	if c.opts.NewMember != nil {
		m, err = c.opts.NewMember(c.t, spec)
	} else {
		m, err = c.newGossip(spec)
	}
	if err != nil {
		_ = tr.Shutdown()
		c.t.Fatalf("meshtest: build %s: %v", node.Name, err)
	}
	node.Member = m
	if gm, ok := m.(gossipMember); ok {
		node.Gossip = gm.Gossip
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		_ = tr.Shutdown()
		c.t.Fatalf("meshtest: start %s: %v", node.Name, err)
	}
	node.stopped = false
}

// Twin is the in-process network the nodes run on, for faults finer than
// Partition (testnet.Network.SetLink); nil with Options.Loopback.
func (c *Cluster) Twin() *testnet.Network {
	if mn, ok := c.Net.(*MemNetwork); ok {
		return mn.Twin()
	}
	return nil
}

func (c *Cluster) host(name string) *testnet.Host {
	if tw := c.Twin(); tw != nil {
		return tw.Host(name)
	}
	return nil
}

func (c *Cluster) newGossip(spec NodeSpec) (Member, error) {
	cfg := gossip.FastTestConfig(spec.Name)
	cfg.RetryJoin = spec.Join
	cfg.PeersFile = filepath.Join(spec.DataDir, "peers.json")
	if c.opts.Config != nil {
		c.opts.Config(spec, &cfg)
	}
	store := catalog.NewStore()
	g, err := gossip.New(cfg, gossip.Deps{
		Logger:     spec.Logger,
		Registerer: spec.Registerer,
		Store:      store,
		Transport:  spec.Transport,
	})
	if err != nil {
		return nil, err
	}
	return gossipMember{Gossip: g, store: store}, nil
}

func (c *Cluster) closeAll() {
	for _, n := range c.Nodes {
		if n.Member != nil {
			_ = n.Member.Close()
		}
	}
	if c.t.Failed() {
		for _, n := range c.Nodes {
			if n.Logs != nil {
				c.t.Logf("---- logs of %s ----\n%s", n.Name, n.Logs.Tail(200))
			}
		}
	}
}

// Kill stops node i at once, without a leave: to the others it fails, as
// after a kill -9 (its transport closes, so dials to it are refused).
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	if err := n.Member.Close(); err != nil {
		c.t.Fatalf("meshtest: kill %s: %v", n.Name, err)
	}
	n.stopped = true
}

// Leave makes node i leave gracefully, then stops it.
func (c *Cluster) Leave(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	if err := n.Member.Leave(5 * time.Second); err != nil {
		c.t.Fatalf("meshtest: leave %s: %v", n.Name, err)
	}
	if err := n.Member.Close(); err != nil {
		c.t.Fatalf("meshtest: close %s after leave: %v", n.Name, err)
	}
	n.stopped = true
}

// Restart starts a stopped node again, with the same name, data dir and
// address. It finds the cluster by itself, as an agent does: through its
// RetryJoin (node 0's address; none for node 0) and the peers it remembers
// in its data dir.
func (c *Cluster) Restart(i int) *Node {
	c.t.Helper()
	n := c.Nodes[i]
	if !n.stopped {
		c.t.Fatalf("meshtest: restart %s: still running", n.Name)
	}
	_ = n.Member.Close()
	c.startNode(n)
	return n
}

// Partition cuts every link between the nodes of a and those of b: on the
// twin, every plane (gossip, Raft, tunnel) at once.
func (c *Cluster) Partition(a, b []int) {
	c.Net.Partition(c.names(a), c.names(b))
}

// Isolate cuts node i from every other node.
func (c *Cluster) Isolate(i int) {
	c.Partition([]int{i}, c.Others(i))
}

// DropPackets drops the UDP packets between the nodes of a and those of b,
// and lets TCP through.
func (c *Cluster) DropPackets(a, b []int) {
	c.Net.DropPackets(c.names(a), c.names(b))
}

// Others returns the indexes of every node but i.
func (c *Cluster) Others(i int) []int {
	var out []int
	for _, n := range c.Nodes {
		if n.Index != i {
			out = append(out, n.Index)
		}
	}
	return out
}

// Heal restores every link.
func (c *Cluster) Heal() { c.Net.Heal() }

func (c *Cluster) names(idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = c.Nodes[i].Name
	}
	return out
}

// Running returns the nodes neither killed nor left.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if !n.stopped {
			out = append(out, n)
		}
	}
	return out
}

// StatusOf returns the status node `observer` shows for the node called
// name, "" when it does not know it.
func (c *Cluster) StatusOf(observer int, name string) catalog.MemberStatus {
	m, ok := c.Nodes[observer].Snapshot().Member(name)
	if !ok {
		return ""
	}
	return m.Status
}

// AllSee reports whether cond holds for the catalog of every running node.
func (c *Cluster) AllSee(cond func(n *Node, s *catalog.Snapshot) bool) bool {
	for _, n := range c.Running() {
		if !cond(n, n.Snapshot()) {
			return false
		}
	}
	return true
}

// Converged reports whether every running node sees every running node
// alive.
func (c *Cluster) Converged() bool { return c.convergence() == nil }

// convergence names the views that are not converged yet, at most a few, so
// that a timeout says which node lacks which.
func (c *Cluster) convergence() error {
	const shown = 5
	running := c.Running()
	var gaps []string
	total := 0
	for _, n := range running {
		s := n.Snapshot()
		for _, o := range running {
			var gap string
			switch m, ok := s.Member(o.Name); {
			case !ok:
				gap = fmt.Sprintf("%s does not know %s", n.Name, o.Name)
			case m.Status != catalog.StatusAlive:
				gap = fmt.Sprintf("%s sees %s %s", n.Name, o.Name, m.Status)
			default:
				continue
			}
			total++
			if len(gaps) < shown {
				gaps = append(gaps, gap)
			}
		}
	}
	if total == 0 {
		return nil
	}
	return fmt.Errorf("%d views missing: %s", total, strings.Join(gaps, "; "))
}

// WaitConverged waits until Converged, or fails the test naming the views
// still missing.
func (c *Cluster) WaitConverged(timeout time.Duration) {
	c.t.Helper()
	testnet.Eventually(c.t, timeout, "every running node to see every running node alive", c.convergence)
}

// LogBuffer is an io.Writer that keeps what a node logged, for assertions.
// It keeps at least the last 5000 lines.
type LogBuffer struct {
	mu    sync.Mutex
	lines []string
	part  bytes.Buffer
}

const maxLogLines = 5000

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.part.Write(p)
	for {
		line, err := b.part.ReadString('\n')
		if err != nil {
			// Incomplete line: keep it for the next write.
			rest := []byte(line)
			b.part.Reset()
			b.part.Write(rest)
			break
		}
		b.lines = append(b.lines, strings.TrimRight(line, "\n"))
	}
	if len(b.lines) > 2*maxLogLines {
		// Trim in chunks, so that a busy logger does not copy the buffer on
		// every line.
		b.lines = append([]string(nil), b.lines[len(b.lines)-maxLogLines:]...)
	}
	return len(p), nil
}

// Lines returns a copy of the captured lines.
func (b *LogBuffer) Lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

// Contains reports whether one captured line contains every one of parts.
func (b *LogBuffer) Contains(parts ...string) bool {
	for _, l := range b.Lines() {
		all := true
		for _, p := range parts {
			if !strings.Contains(l, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// String returns the captured lines, joined, and any unfinished last line.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	for _, l := range b.lines {
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	sb.Write(b.part.Bytes())
	return sb.String()
}

// Tail returns the last n lines, joined.
func (b *LogBuffer) Tail(n int) string {
	l := b.Lines()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
