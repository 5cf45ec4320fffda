// Command raft benchmarks the Raft policy store: three server agents on
// loopback with the production timers, real mutual TLS on the server port
// and real disk, measured with boltlog (the store in use), raft-wal and
// raft-boltdb side by side.
//
//	go run ./bench/raft [-writers 64] [-duration 5s] [-watchers 50] [-stores boltlog,wal,bolt]
//
// It prints, for each log store: the latency of one writer (p50, p99), the
// throughput and latency of many concurrent writers, both on the leader and
// forwarded from a client agent; then, for the store in use (boltlog), the
// time from a write until each of 50 watching client agents holds it, and
// the leader failover time.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/raftstore"
)

var (
	writers   = flag.Int("writers", 64, "concurrent writers of the throughput phase")
	duration  = flag.Duration("duration", 5*time.Second, "length of each throughput phase")
	seqWrites = flag.Int("seq", 300, "writes of the single-writer latency phase")
	watchers  = flag.Int("watchers", 50, "client agents watching the policy")
	propN     = flag.Int("prop-writes", 100, "policy writes of the propagation phase")
	propRate  = flag.Int("prop-rate", 20, "policy writes per second in the propagation phase")
	failovers = flag.Int("failovers", 5, "leader kills of the failover phase")
	stores    = flag.String("stores", "boltlog,wal,bolt", "log stores to compare: boltlog (in use), wal (raft-wal), bolt (raft-boltdb)")
	dirFlag   = flag.String("dir", "", "directory for the data (default: a temporary one under the current directory, on real disk)")
	appendsN  = flag.Int("appends", 400, "appends per store and batch size of the store-only phase (0 skips it)")
)

func main() {
	flag.Parse()
	base := *dirFlag
	if base == "" {
		var err error
		if base, err = os.MkdirTemp(".", ".bench-raft-"); err != nil {
			fail(err)
		}
		defer os.RemoveAll(base)
	}
	fmt.Printf("bench/raft: 3 servers on loopback, mTLS, LAN timers (heartbeat %s, election %s, lease %s), data in %s\n",
		raftstore.LANTiming.HeartbeatTimeout, raftstore.LANTiming.ElectionTimeout, raftstore.LANTiming.LeaderLeaseTimeout, base)
	fmt.Printf("writes: KV sets of 64 bytes over 1000 keys; throughput phase %d writers for %s\n\n", *writers, *duration)
	names := strings.Split(*stores, ",")
	openers := map[string]raftstore.LogOpener{"boltlog": raftstore.OpenLog, "wal": openWAL, "bolt": openBolt}
	for _, name := range names {
		if openers[name] == nil {
			fail(fmt.Errorf("unknown store %q", name))
		}
	}
	if *appendsN > 0 {
		storeOnly(base, names, openers)
	} else {
		fmt.Println("| store | path | 1 writer p50 | 1 writer p99 | writes/s | p50 under load | p99 under load |")
		fmt.Println("|---|---|---|---|---|---|---|")
	}
	for _, name := range names {
		opener := openers[name]
		c := startCluster(filepath.Join(base, name), opener)
		leader := c.leader()
		client := c.addClient("writer")
		for _, p := range []struct {
			name string
			node *raftstore.Node
		}{{"on the leader", leader.node}, {"client agent (forwarded)", client}} {
			seq := sequential(p.node, *seqWrites)
			rate, load := concurrent(p.node, *writers, *duration)
			fmt.Printf("| %s | %s | %s | %s | %.0f | %s | %s |\n", storeName(name), p.name,
				ms(pct(seq, 50)), ms(pct(seq, 99)), rate, ms(pct(load, 50)), ms(pct(load, 99)))
		}
		c.close()
	}
	// Propagation and failover do not depend on the store much: they are
	// measured once, on the store in use, in a cluster of their own.
	if slices.Contains(names, "boltlog") {
		c := startCluster(filepath.Join(base, "boltlog-phases"), nil)
		c.leader()
		c.addClient("writer")
		c.propagation()
		c.failover()
		c.close()
	}
}

// storeOnly measures the stores alone, no Raft: the time of one durable
// StoreLogs of 1 and of 64 entries (64-byte values, encoded as Raft would
// hand them), the stores taking turns in rounds so that a noisy neighbour
// weighs on each alike.
func storeOnly(base string, names []string, openers map[string]raftstore.LogOpener) {
	type open struct {
		logs   raft.LogStore
		closer io.Closer
		next   uint64
		lat    map[int][]time.Duration
	}
	stores := map[string]*open{}
	for _, name := range names {
		dir := filepath.Join(base, "store-"+name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			fail(err)
		}
		logs, _, c, err := openers[name](dir, slog.New(slog.DiscardHandler))
		if err != nil {
			fail(err)
		}
		stores[name] = &open{logs: logs, closer: c, next: 1, lat: map[int][]time.Duration{}}
	}
	batches := []int{1, 64}
	const rounds = 10
	for r := 0; r < rounds; r++ {
		for _, size := range batches {
			for _, name := range names {
				s := stores[name]
				for i := 0; i < *appendsN/rounds; i++ {
					batch := make([]*raft.Log, size)
					for j := range batch {
						batch[j] = &raft.Log{Index: s.next, Term: 1, Type: raft.LogCommand, Data: value, AppendedAt: time.Now()}
						s.next++
					}
					t0 := time.Now()
					if err := s.logs.StoreLogs(batch); err != nil {
						fail(fmt.Errorf("%s: %w", name, err))
					}
					s.lat[size] = append(s.lat[size], time.Since(t0))
				}
			}
		}
	}
	fmt.Printf("store alone: durable StoreLogs, %d per store and batch size, the stores taking turns in %d rounds\n\n", *appendsN, rounds)
	fmt.Println("| store | 1 entry p50 | 1 entry p99 | 64 entries p50 | 64 entries p99 | entries/s at 64 |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, name := range names {
		s := stores[name]
		l1, l64 := s.lat[1], s.lat[64]
		var sum time.Duration
		for _, d := range l64 {
			sum += d
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %.0f |\n", storeName(name), ms(pct(l1, 50)), ms(pct(l1, 99)),
			ms(pct(l64, 50)), ms(pct(l64, 99)), float64(64*len(l64))/sum.Seconds())
		_ = s.closer.Close()
	}
	fmt.Println()
	fmt.Println("| store | path | 1 writer p50 | 1 writer p99 | writes/s | p50 under load | p99 under load |")
	fmt.Println("|---|---|---|---|---|---|---|")
}

func storeName(s string) string {
	switch s {
	case "boltlog":
		return "boltlog (bbolt v1.4.3)"
	case "wal":
		return "raft-wal v0.4.0"
	}
	return "raft-boltdb v0.0.0-20230125174641"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/raft:", err)
	os.Exit(1)
}

// openWAL opens raft-wal as releases before boltlog did: in dir/wal, with
// its bolt meta store, closed after the log.
func openWAL(dir string, log *slog.Logger) (raft.LogStore, raft.StableStore, io.Closer, error) {
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(walDir, raftwal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, nil, nil, err
	}
	return w, w, closer(func() error { w.Close(); return meta.Close() }), nil
}

type closer func() error

func (f closer) Close() error { return f() }

// openBolt opens raft-boltdb (v1, the one that builds with raft v1.8) as
// log and stable store.
func openBolt(dir string, _ *slog.Logger) (raft.LogStore, raft.StableStore, io.Closer, error) {
	s, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft-boltdb.db"))
	if err != nil {
		return nil, nil, nil, err
	}
	return s, s, s, nil
}

type server struct {
	cfg  raftstore.Config
	node *raftstore.Node
}

type cluster struct {
	dir     string
	key     []byte
	disc    *raftstore.StaticDiscovery
	opener  raftstore.LogOpener
	servers []*server
	clients []*raftstore.Node
}

func startCluster(dir string, opener raftstore.LogOpener) *cluster {
	c := &cluster{dir: dir, key: make([]byte, 32), disc: raftstore.NewStaticDiscovery(), opener: opener}
	_, _ = rand.Read(c.key)
	var infos []raftstore.ServerInfo
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		name := fmt.Sprintf("s%d", i+1)
		s := &server{cfg: raftstore.Config{
			NodeName: name, DataDir: filepath.Join(dir, name), ClusterKey: c.key,
			Server: true, BootstrapExpect: 3, BindAddr: addr, AdvertiseAddr: addr,
			Timing: raftstore.LANTiming, DeadServerThreshold: time.Hour,
		}}
		c.servers = append(c.servers, s)
		infos = append(infos, raftstore.ServerInfo{ID: name, Addr: addr, Status: catalog.StatusAlive, Expect: 3})
	}
	c.disc.Set(infos)
	var wg sync.WaitGroup
	for _, s := range c.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.start(s)
		}()
	}
	wg.Wait()
	return c
}

func (c *cluster) start(s *server) {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		fail(err)
	}
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for ln, err = net.Listen("tcp", s.cfg.BindAddr); err != nil && time.Now().Before(deadline); ln, err = net.Listen("tcp", s.cfg.BindAddr) {
		time.Sleep(20 * time.Millisecond) // the port lingers briefly after a kill
	}
	if err != nil {
		fail(err)
	}
	n, err := raftstore.New(s.cfg, raftstore.Deps{Discovery: c.disc, Listener: ln, LogStore: c.opener})
	if err != nil {
		fail(err)
	}
	if err := n.Start(context.Background()); err != nil {
		fail(err)
	}
	s.node = n
}

func (c *cluster) addClient(name string) *raftstore.Node {
	dir := filepath.Join(c.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fail(err)
	}
	n, err := raftstore.New(raftstore.Config{NodeName: name, DataDir: dir, ClusterKey: c.key, WatchHeartbeat: time.Second},
		raftstore.Deps{Discovery: c.disc})
	if err != nil {
		fail(err)
	}
	if err := n.Start(context.Background()); err != nil {
		fail(err)
	}
	c.clients = append(c.clients, n)
	return n
}

// leader waits for a server that leads.
func (c *cluster) leader() *server {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.servers {
			if s.node == nil {
				continue
			}
			if lead, _ := s.node.Leadership(); lead {
				return s
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	fail(fmt.Errorf("no leader after 60s"))
	return nil
}

func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, n := range c.clients {
		wg.Add(1)
		go func() { defer wg.Done(); n.Close() }()
	}
	for _, s := range c.servers {
		if s.node != nil {
			wg.Add(1)
			go func() { defer wg.Done(); s.node.Close() }()
		}
	}
	wg.Wait()
}

var value = []byte(strings.Repeat("v", 64))

func write(n *raftstore.Node, i int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	_, err := n.KVSet(ctx, fmt.Sprintf("bench/%d", i%1000), value)
	return time.Since(t0), err
}

func sequential(n *raftstore.Node, count int) []time.Duration {
	var out []time.Duration
	errs := 0
	for i := 0; i < count; i++ {
		d, err := write(n, i)
		if err != nil {
			if errs++; errs > 10 {
				fail(err)
			}
			continue
		}
		out = append(out, d)
	}
	if errs > 0 {
		fmt.Fprintf(os.Stderr, "bench/raft: %d sequential writes failed\n", errs)
	}
	return out
}

func concurrent(n *raftstore.Node, writers int, d time.Duration) (float64, []time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := w; time.Now().Before(stop) && len(mine) < 1_000_000; i += writers {
				dd, err := write(n, i)
				if err != nil {
					errs.Add(1)
					continue
				}
				mine = append(mine, dd)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if e := errs.Load(); e > 0 {
		fmt.Fprintf(os.Stderr, "bench/raft: %d writes failed\n", e)
	}
	return float64(len(lat)) / time.Since(start).Seconds(), lat
}

// propagation measures the time from the start of a policy write until
// each watching client agent has installed a set at or past its index.
func (c *cluster) propagation() {
	var agents []*raftstore.Node
	for i := 0; i < *watchers; i++ {
		agents = append(agents, c.addClient(fmt.Sprintf("w%02d", i)))
	}
	writer := c.clients[0]
	// A policy of 50 documents to start with.
	var src strings.Builder
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&src, "---\nkind: Resilience\nname: svc%d\ntimeouts: {connect: 1s}\n", i)
	}
	docs, err := policy.Parse([]byte(src.String()))
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	idx, err := writer.ApplyDocuments(ctx, docs, nil)
	if err != nil {
		fail(err)
	}
	waitAll(agents, idx)

	// Each agent records when it installed each index.
	type seen struct {
		index uint64
		at    time.Time
	}
	records := make([][]seen, len(agents))
	var mu sync.Mutex
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s, ch := a.Replica().Watch()
				mu.Lock()
				records[i] = append(records[i], seen{s.Index(), time.Now()})
				mu.Unlock()
				select {
				case <-ch:
				case <-wctx.Done():
					return
				}
			}
		}()
	}
	type w struct {
		index uint64
		start time.Time
	}
	var ws []w
	retried := 0
	tick := time.NewTicker(time.Second / time.Duration(*propRate))
	for i := 0; i < *propN; i++ {
		<-tick.C
		d, _ := policy.Parse([]byte(fmt.Sprintf("kind: Resilience\nname: svc%d\ntimeouts: {connect: %dms}\n", i%50, 100+i)))
		t0 := time.Now()
		idx, err := writer.ApplyDocuments(ctx, d, nil)
		for try := 0; err != nil && try < 10; try++ {
			// A leadership change on this busy machine: count it, retry.
			retried++
			t0 = time.Now()
			idx, err = writer.ApplyDocuments(ctx, d, nil)
		}
		if err != nil {
			fail(err)
		}
		ws = append(ws, w{idx, t0})
	}
	tick.Stop()
	waitAll(agents, ws[len(ws)-1].index)
	cancel()
	wg.Wait()
	var lat []time.Duration
	var worst []time.Duration // per write, the slowest agent
	for _, wr := range ws {
		var slowest time.Duration
		for _, rec := range records {
			for _, r := range rec {
				if r.index >= wr.index {
					d := max(r.at.Sub(wr.start), 0)
					lat = append(lat, d)
					slowest = max(slowest, d)
					break
				}
			}
		}
		worst = append(worst, slowest)
	}
	fmt.Printf("\npropagation: %d policy writes at %d/s to %d watching client agents (policy of 50 documents, streamed over mTLS)\n", len(ws), *propRate, len(agents))
	fmt.Println("| samples | p50 | p99 | max | p50 of the slowest agent per write | p99 of the slowest agent per write |")
	fmt.Println("|---|---|---|---|---|---|")
	fmt.Printf("| %d | %s | %s | %s | %s | %s |\n", len(lat), ms(pct(lat, 50)), ms(pct(lat, 99)), ms(pct(lat, 100)), ms(pct(worst, 50)), ms(pct(worst, 99)))
	if retried > 0 {
		fmt.Printf("(%d writes were retried after a leadership change)\n", retried)
	}
	for _, a := range agents {
		a.Close()
	}
	c.clients = c.clients[:1]
}

func waitAll(agents []*raftstore.Node, idx uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, a := range agents {
		if _, err := a.Replica().Wait(ctx, idx-1); err != nil {
			fail(fmt.Errorf("agent did not reach index %d: %w", idx, err))
		}
	}
}

// failover kills the leader while a client agent writes every 5ms, and
// measures the time from the kill until a new leader exists and until the
// next write is acknowledged.
func (c *cluster) failover() {
	client := c.clients[0]
	var elect, ackd []time.Duration
	for round := 0; round < *failovers; round++ {
		old := c.leader()
		var acks atomic.Int64
		var lastAck atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := write(client, i); err == nil {
					acks.Add(1)
					lastAck.Store(time.Now().UnixNano())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		for acks.Load() < 20 {
			time.Sleep(5 * time.Millisecond)
		}
		killed := time.Now()
		old.node.Close()
		old.node = nil
		nl := c.leader()
		elect = append(elect, time.Since(killed))
		for lastAck.Load() < killed.UnixNano() {
			time.Sleep(time.Millisecond)
		}
		ackd = append(ackd, time.Unix(0, lastAck.Load()).Sub(killed))
		close(stop)
		wg.Wait()
		_ = nl
		c.start(old) // back from its data dir, before the next round
		caught := time.Now().Add(30 * time.Second)
		for time.Now().Before(caught) {
			if old.node.Status().Leader != "" {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	fmt.Printf("\nfailover: %d leader kills while a client agent writes every 5 ms\n", len(elect))
	fmt.Println("| measure | p50 | max | each |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| kill → new leader | %s | %s | %s |\n", ms(pct(elect, 50)), ms(pct(elect, 100)), list(elect))
	fmt.Printf("| kill → next acknowledged write | %s | %s | %s |\n", ms(pct(ackd, 50)), ms(pct(ackd, 100)), list(ackd))
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func list(d []time.Duration) string {
	var s []string
	for _, x := range d {
		s = append(s, fmt.Sprintf("%.0f", float64(x)/float64(time.Millisecond)))
	}
	return strings.Join(s, ", ") + " ms"
}
