// Command gossip benchmarks the gossip layer: N agents (default 50) in one
// process, each on its own real UDP and TCP sockets on 127.0.0.1, running
// the production profile (gossip.DefaultLANConfig). It measures
//
//	(a) registration -> every agent's catalog shows it, p50/p99;
//	(b) kill (transport closed abruptly, no leave) -> every other agent shows
//	    the node failed, p50/p99; and the same for a node that goes silent
//	    (all its traffic dropped) instead of crashing;
//	(c) steady-state gossip bytes per second per agent, counted at the
//	    transport (payload after encryption, without IP/UDP/TCP headers);
//
// and counts false positives: live agents shown as failed at any time.
//
//	go run ./bench/gossip -n 50 -reg 20 -kill 10 -silent 5 -steady 30s
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime/pprof"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/meshtest"
)

func main() {
	n := flag.Int("n", 50, "number of agents")
	regTrials := flag.Int("reg", 20, "registration trials")
	killTrials := flag.Int("kill", 10, "kill trials (crash: sockets closed)")
	silentTrials := flag.Int("silent", 5, "silent-failure trials (all traffic dropped)")
	steady := flag.Duration("steady", 30*time.Second, "steady-state bandwidth window")
	encrypt := flag.Bool("encrypt", true, "encrypt gossip (AES-256-GCM, as in production)")
	maxTime := flag.Duration("max-time", 15*time.Minute, "abort after this long")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.BoolVar(&debug, "debug", false, "on a timed-out registration, print the stale agents' logs")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/gossip:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench/gossip:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*n, *regTrials, *killTrials, *silentTrials, *steady, *encrypt, *maxTime); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/gossip:", err)
		os.Exit(1)
	}
}

var debug bool

func logLevel() slog.Level {
	if debug {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

type agent struct {
	name  string
	g     *gossip.Gossip
	store *catalog.Store
	logs  *meshtest.LogBuffer
}

type bench struct {
	net      *meshtest.LoopbackNetwork
	key      string
	seed     string // address of a live agent to join
	mu       sync.Mutex
	agents   []*agent
	gone     map[string]bool // killed or silenced on purpose
	fps      map[string]bool // "observer saw node failed" for live nodes
	suspects int
	next     int
	deadline time.Time
	events   *eventCounter
}

// eventCounter is a slog handler that counts the agents' log messages, to
// tell what caused a false positive.
type eventCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *eventCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= logLevel() }
func (e *eventCounter) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	if msg == "memberlist" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "detail" {
				d := a.Value.String()
				if len(d) > 40 {
					d = d[:40]
				}
				msg += ": " + d
			}
			return true
		})
	}
	e.mu.Lock()
	e.n[msg]++
	e.mu.Unlock()
	return nil
}
func (e *eventCounter) WithAttrs([]slog.Attr) slog.Handler { return e }
func (e *eventCounter) WithGroup(string) slog.Handler      { return e }
func (e *eventCounter) count(msg string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[msg]
}

func run(n, regTrials, killTrials, silentTrials int, steady time.Duration, encrypt bool, maxTime time.Duration) error {
	b := &bench{
		net:      meshtest.NewLoopbackNetwork(),
		gone:     map[string]bool{},
		fps:      map[string]bool{},
		deadline: time.Now().Add(maxTime),
		events:   &eventCounter{n: map[string]int{}},
	}
	defer b.net.Close()
	if encrypt {
		k, err := gossip.GenerateKey()
		if err != nil {
			return err
		}
		b.key = k
	}
	defer b.closeAll()
	stopWatch := make(chan struct{})
	var watchers sync.WaitGroup
	lagStop := make(chan struct{})
	lags := make(chan []time.Duration, 1)
	go measureLag(lagStop, lags)

	fmt.Printf("starting %d agents on 127.0.0.1 (DefaultLANConfig, encrypt=%v)...\n", n, encrypt)
	start := time.Now()
	for range n {
		a, err := b.addAgent()
		if err != nil {
			return err
		}
		watchers.Add(1)
		go b.watch(a, stopWatch, &watchers)
	}
	if err := b.waitConverged(60 * time.Second); err != nil {
		return err
	}
	fmt.Printf("converged in %s\n", time.Since(start).Round(time.Millisecond))
	// Every agent registers one service, as a real node would.
	for _, a := range b.live() {
		if _, err := a.g.SetLocal(record(8080)); err != nil {
			return err
		}
	}
	time.Sleep(5 * time.Second) // let the registrations settle before measuring idle traffic

	// (c) steady state.
	fmt.Printf("measuring steady-state traffic for %s...\n", steady)
	before := b.stats()
	t0 := time.Now()
	time.Sleep(steady)
	after := b.stats()
	secs := time.Since(t0).Seconds()
	var sent, recv []float64
	for name, s1 := range after {
		s0, ok := before[name]
		if !ok {
			continue
		}
		sent = append(sent, float64(s1.BytesSent()-s0.BytesSent())/secs)
		recv = append(recv, float64(s1.BytesReceived()-s0.BytesReceived())/secs)
	}

	// (a) registration.
	fmt.Printf("registration trials: %d...\n", regTrials)
	var regLat []time.Duration
	regTimeouts := 0
	const regTimeout = 10 * time.Second
	for i := range regTrials {
		if err := b.checkTime(); err != nil {
			return err
		}
		live := b.live()
		a := live[rand.IntN(len(live))]
		var v uint64
		d, err := b.timeUntilAll(regTimeout, func() { v, _ = a.g.SetLocal(record(9000 + i)) }, func(s *catalog.Snapshot) bool {
			m, ok := s.Member(a.name)
			return ok && m.Version >= v && len(m.Services) == 1 && m.Services[0].Port == 9000+i
		})
		if err != nil {
			fmt.Printf("  registration trial %d: %v\n", i, err)
			if debug {
				b.dumpStale(a, v)
			}
			d = regTimeout
			regTimeouts++
		}
		regLat = append(regLat, d)
		time.Sleep(200 * time.Millisecond) // space the trials out
	}

	// (b) kill: close the agent's sockets abruptly, no leave.
	fmt.Printf("kill trials: %d...\n", killTrials)
	var killLat []time.Duration
	killTimeouts := 0
	const killTimeout = 30 * time.Second
	for i := range killTrials {
		if err := b.checkTime(); err != nil {
			return err
		}
		victim := b.pickVictim()
		d, err := b.timeUntilAll(killTimeout, func() { _ = victim.g.Close() }, failedCond(victim.name))
		if err != nil {
			fmt.Printf("  kill trial %d: %v\n", i, err)
			d = killTimeout
			killTimeouts++
		}
		killLat = append(killLat, d)
		if err := b.replace(stopWatch, &watchers); err != nil {
			return err
		}
	}

	// (b') silence: drop all of the agent's traffic, as a host that lost
	// power or its link; only memberlist's suspicion timer can tell.
	fmt.Printf("silent-failure trials: %d...\n", silentTrials)
	var silentLat []time.Duration
	silentTimeouts := 0
	const silentTimeout = 60 * time.Second
	for i := range silentTrials {
		if err := b.checkTime(); err != nil {
			return err
		}
		victim := b.pickVictim()
		var others []string
		for _, a := range b.live() {
			if a != victim {
				others = append(others, a.name)
			}
		}
		d, err := b.timeUntilAll(silentTimeout, func() { b.net.Partition([]string{victim.name}, others) }, failedCond(victim.name))
		if err != nil {
			fmt.Printf("  silent trial %d: %v\n", i, err)
			d = silentTimeout
			silentTimeouts++
		}
		silentLat = append(silentLat, d)
		_ = victim.g.Close()
		b.net.Heal()
		if err := b.replace(stopWatch, &watchers); err != nil {
			return err
		}
	}
	close(stopWatch)
	watchers.Wait()
	close(lagStop)
	lag := <-lags

	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Printf("\nGossip benchmark: %d agents in one process, loopback UDP/TCP, DefaultLANConfig, encrypt=%v\n", n, encrypt)
	fmt.Fprintln(w, "measure\tsamples\tp50\tp99\tmax\ttimed out\t")
	row := func(name string, d []time.Duration, timeouts int) {
		if len(d) == 0 {
			return
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%d\t\n", name, len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(d[len(d)-1]), timeouts)
	}
	row("(a) registration -> all agents see it", regLat, regTimeouts)
	row("(b) kill -> all agents see failed", killLat, killTimeouts)
	row("(b') silence -> all agents see failed", silentLat, silentTimeouts)
	w.Flush()
	sort.Float64s(sent)
	sort.Float64s(recv)
	fmt.Printf("(c) steady state over %s, per agent: sent avg %.0f B/s, max %.0f B/s; received avg %.0f B/s, max %.0f B/s\n",
		steady, avg(sent), last(sent), avg(recv), last(recv))
	b.mu.Lock()
	fmt.Printf("false positives (a live agent shown failed by any agent): %d; suspect sightings: %d\n", len(b.fps), b.suspects)
	sort.Slice(lag, func(i, j int) bool { return lag[i] < lag[j] })
	if len(lag) > 0 {
		fmt.Printf("scheduling delay of a 10 ms ticker in this process (machine load): p50 %s, p99 %s, max %s\n",
			ms(pct(lag, 50)), ms(pct(lag, 99)), ms(lag[len(lag)-1]))
	}
	fmt.Printf("events: down notices raised %d, memberlist departures %d, refutations %d\n",
		b.events.count("gossip member failed: probe failed and its gossip port refused connections"),
		b.events.count("gossip member gone"), b.events.count("gossip refuting a notice about this node"))
	fmt.Println("most frequent log messages of all agents (names replaced by N):")
	for _, l := range b.events.top(12) {
		fmt.Println("  " + l)
	}
	for fp := range b.fps {
		fmt.Println("  false positive:", fp)
	}
	b.mu.Unlock()
	return nil
}

func record(port int) catalog.Record {
	return catalog.Record{TunnelPort: 7948, Services: []catalog.Service{{
		ID: "api-1", Name: "api", Port: port, Tags: []string{"v1"},
		Meta: map[string]string{"team": "core"}, Health: catalog.Passing,
	}}}
}

func failedCond(name string) func(*catalog.Snapshot) bool {
	return func(s *catalog.Snapshot) bool {
		m, ok := s.Member(name)
		return ok && m.Status == catalog.StatusFailed
	}
}

func (b *bench) addAgent() (*agent, error) {
	b.mu.Lock()
	name := fmt.Sprintf("agent-%02d", b.next)
	b.next++
	seed := b.seed
	b.mu.Unlock()
	tr, err := b.net.NewTransport(name)
	if err != nil {
		return nil, err
	}
	cfg := gossip.DefaultLANConfig()
	cfg.NodeName = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	if b.key != "" {
		cfg.Keyring = []string{b.key}
	}
	if seed != "" {
		cfg.RetryJoin = []string{seed}
	}
	store := catalog.NewStore()
	logs := &meshtest.LogBuffer{}
	g, err := gossip.New(cfg, gossip.Deps{
		Store:     store,
		Transport: tr,
		Logger:    slog.New(teeHandler{b.events, slog.NewTextHandler(logs, &slog.HandlerOptions{Level: logLevel()})}),
	})
	if err != nil {
		return nil, err
	}
	if err := g.Start(context.Background()); err != nil {
		return nil, err
	}
	a := &agent{name: name, g: g, store: store, logs: logs}
	b.mu.Lock()
	b.agents = append(b.agents, a)
	if b.seed == "" {
		b.seed = g.Addr()
	}
	b.mu.Unlock()
	return a, nil
}

// replace starts a new agent for the one a trial took away, and waits until
// the cluster converged again.
func (b *bench) replace(stop chan struct{}, wg *sync.WaitGroup) error {
	b.mu.Lock()
	for _, a := range b.agents {
		if !b.gone[a.name] {
			b.seed = a.g.Addr()
			break
		}
	}
	b.mu.Unlock()
	a, err := b.addAgent()
	if err != nil {
		return err
	}
	wg.Add(1)
	go b.watch(a, stop, wg)
	if _, err := a.g.SetLocal(record(8080)); err != nil {
		return err
	}
	return b.waitConverged(60 * time.Second)
}

func (b *bench) pickVictim() *agent {
	live := b.live()
	// Never the first live agent: it is the join seed.
	v := live[1+rand.IntN(len(live)-1)]
	b.mu.Lock()
	b.gone[v.name] = true
	b.mu.Unlock()
	return v
}

func (b *bench) live() []*agent {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*agent
	for _, a := range b.agents {
		if !b.gone[a.name] {
			out = append(out, a)
		}
	}
	return out
}

// watch records every sighting of a live agent as failed (a false positive)
// and counts suspect sightings, in a's catalog, until stop.
func (b *bench) watch(a *agent, stop chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	suspected := map[string]bool{}
	for {
		snap, ch := a.store.Watch()
		b.mu.Lock()
		gone := b.gone[a.name]
		for _, m := range snap.Members() {
			switch m.Status {
			case catalog.StatusFailed, catalog.StatusLeft:
				if !gone && !b.gone[m.Node] {
					b.fps[fmt.Sprintf("%s saw %s %s", a.name, m.Node, m.Status)] = true
				}
			case catalog.StatusSuspect:
				if !suspected[m.Node] {
					b.suspects++
				}
			}
			suspected[m.Node] = m.Status == catalog.StatusSuspect
		}
		b.mu.Unlock()
		if gone {
			return
		}
		select {
		case <-ch:
		case <-stop:
			return
		}
	}
}

// timeUntilAll runs act, then returns how long it took until cond held on
// every live agent's catalog (the last one to see it).
func (b *bench) timeUntilAll(timeout time.Duration, act func(), cond func(*catalog.Snapshot) bool) (time.Duration, error) {
	live := b.live()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		latest  time.Time
		missing []string
	)
	start := time.Now()
	act()
	for _, a := range live {
		wg.Add(1)
		go func(a *agent) {
			defer wg.Done()
			for {
				snap, ch := a.store.Watch()
				if cond(snap) {
					now := time.Now()
					mu.Lock()
					if now.After(latest) {
						latest = now
					}
					mu.Unlock()
					return
				}
				select {
				case <-ch:
				case <-ctx.Done():
					mu.Lock()
					missing = append(missing, a.name)
					mu.Unlock()
					return
				}
			}
		}(a)
	}
	wg.Wait()
	if len(missing) > 0 {
		return 0, fmt.Errorf("%d agents did not see it within %s (e.g. %s)", len(missing), timeout, missing[0])
	}
	return latest.Sub(start), nil
}

func (b *bench) waitConverged(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		live := b.live()
		ok := true
		for _, a := range live {
			s := a.store.Current()
			for _, o := range live {
				if m, found := s.Member(o.name); !found || !m.Status.Reachable() {
					ok = false
					break
				}
			}
			if !ok {
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no convergence within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bench) stats() map[string]gossip.Stats {
	out := map[string]gossip.Stats{}
	for _, a := range b.live() {
		out[a.name] = a.g.Stats()
	}
	return out
}

func (b *bench) checkTime() error {
	if time.Now().After(b.deadline) {
		return fmt.Errorf("out of time (-max-time)")
	}
	return nil
}

func (b *bench) closeAll() {
	b.mu.Lock()
	agents := append([]*agent(nil), b.agents...)
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func(a *agent) { defer wg.Done(); _ = a.g.Close() }(a)
	}
	wg.Wait()
}

// pct is the nearest-rank percentile of sorted d.
func pct(d []time.Duration, p int) time.Duration {
	i := (p*len(d)+99)/100 - 1
	if i < 0 {
		i = 0
	}
	return d[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func avg(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func last(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return v[len(v)-1]
}

// measureLag samples how late a 10 ms ticker fires: the delay every agent's
// timers suffer, which shows how loaded the machine was during the run.
func measureLag(stop chan struct{}, out chan<- []time.Duration) {
	var lags []time.Duration
	const every = 10 * time.Millisecond
	next := time.Now().Add(every)
	t := time.NewTimer(every)
	for {
		select {
		case <-stop:
			out <- lags
			return
		case <-t.C:
			lags = append(lags, time.Since(next))
			next = time.Now().Add(every)
			t.Reset(every)
		}
	}
}

type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}
func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	_ = t.a.Handle(ctx, r.Clone())
	return t.b.Handle(ctx, r)
}
func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}
func (t teeHandler) WithGroup(n string) slog.Handler {
	return teeHandler{t.a.WithGroup(n), t.b.WithGroup(n)}
}

// dumpStale prints, for every agent whose catalog misses version v of a's
// record, what it holds and the end of its log.
func (b *bench) dumpStale(a *agent, v uint64) {
	for _, o := range b.live() {
		m, ok := o.store.Current().Member(a.name)
		if ok && m.Version >= v {
			continue
		}
		fmt.Printf("---- %s holds %s at version %d, want %d; %+v\n%s\n", o.name, a.name, m.Version, v, o.g.Stats(), o.logs.Tail(40))
	}
}

// top returns the n most frequent messages, agent names folded together.
func (e *eventCounter) top(n int) []string {
	e.mu.Lock()
	folded := map[string]int{}
	for msg, c := range e.n {
		folded[agentName.ReplaceAllString(msg, "agent-N")] += c
	}
	e.mu.Unlock()
	type kv struct {
		msg string
		c   int
	}
	var all []kv
	for m, c := range folded {
		all = append(all, kv{m, c})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].c > all[j].c })
	var out []string
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, fmt.Sprintf("%6d  %s", all[i].c, all[i].msg))
	}
	return out
}

var agentName = regexp.MustCompile(`agent-[0-9]+`)
