// Command gossip benchmarks the gossip layer: N agents (default 50) in one
// process, each on its own real UDP and TCP sockets on 127.0.0.1. It
// measures, for Meshwork's profile (gossip.DefaultLANConfig) and, in the
// same run, for memberlist's own LAN defaults as the comparison peer:
//
//	(a) registration -> every agent's catalog shows it, p50/p99;
//	(b) kill (sockets closed abruptly, no leave, as kill -9) -> every other
//	    agent shows the node failed, p50/p99;
//	(b') silence (all of a node's traffic dropped, as a host that lost power
//	    or its link) -> every other agent shows it failed;
//	(c) steady-state gossip bytes per second per agent, counted at the
//	    transport (payload after encryption, without IP/UDP/TCP headers);
//
// and counts false positives: live agents shown failed by any agent at any
// time. Every wait is bounded; a trial that times out is reported as such.
//
//	go run ./bench/gossip                  # 50 agents, both profiles
//	go run ./bench/gossip -compare=false   # Meshwork's profile only
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
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/meshtest"
)

type options struct {
	n, reg, kill, silent int
	steady               time.Duration
	encrypt              bool
	debug                bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 50, "number of agents")
	flag.IntVar(&o.reg, "reg", 20, "registration trials")
	flag.IntVar(&o.kill, "kill", 10, "kill trials (crash: sockets closed)")
	flag.IntVar(&o.silent, "silent", 5, "silent-failure trials (all traffic dropped)")
	flag.DurationVar(&o.steady, "steady", 30*time.Second, "steady-state bandwidth window")
	flag.BoolVar(&o.encrypt, "encrypt", true, "encrypt gossip (AES-256-GCM, as in production)")
	compare := flag.Bool("compare", true, "also run memberlist's LAN defaults, the comparison peer")
	maxTime := flag.Duration("max-time", 20*time.Minute, "abort after this long")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.BoolVar(&o.debug, "debug", false, "log at debug level; on a timed-out registration, print the stale agents' logs")
	flag.Parse()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/gossip:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	deadline := time.Now().Add(*maxTime)
	profiles := []profile{meshworkProfile()}
	if *compare {
		profiles = append(profiles, memberlistProfile())
	}
	var results []*result
	for _, p := range profiles {
		fmt.Printf("== %s: %d agents on 127.0.0.1, encrypt=%v\n", p.name, o.n, o.encrypt)
		r, err := runProfile(p, o, deadline)
		if err != nil {
			pprof.StopCPUProfile()
			fmt.Fprintln(os.Stderr, "bench/gossip:", err)
			os.Exit(1)
		}
		results = append(results, r)
	}
	report(os.Stdout, o, results)
}

// profile is a gossip configuration under test.
type profile struct {
	name string
	cfg  gossip.Config
}

func meshworkProfile() profile {
	return profile{name: "meshwork (gossip.DefaultLANConfig)", cfg: gossip.DefaultLANConfig()}
}

// memberlistProfile is memberlist.DefaultLANConfig's timers, without the
// refused-connection evidence, which memberlist does not have.
func memberlistProfile() profile {
	ml := memberlist.DefaultLANConfig()
	c := gossip.DefaultLANConfig()
	c.ProbeInterval = ml.ProbeInterval
	c.ProbeTimeout = ml.ProbeTimeout
	c.IndirectChecks = ml.IndirectChecks
	c.SuspicionMult = ml.SuspicionMult
	c.SuspicionMaxTimeoutMult = ml.SuspicionMaxTimeoutMult
	c.AwarenessMaxMultiplier = ml.AwarenessMaxMultiplier
	c.GossipInterval = ml.GossipInterval
	c.GossipNodes = ml.GossipNodes
	c.GossipToTheDeadTime = ml.GossipToTheDeadTime
	c.RetransmitMult = ml.RetransmitMult
	c.PushPullInterval = ml.PushPullInterval
	c.TCPTimeout = ml.TCPTimeout
	c.EnableCompression = ml.EnableCompression
	c.DisableRefusalEvidence = true
	return profile{name: "memberlist.DefaultLANConfig (comparison)", cfg: c}
}

type result struct {
	profile              string
	reg, kill, silent    []time.Duration
	regTO, killTO, silTO int
	sent, recv           []float64
	fps                  []string
	suspects             int
	lag                  []time.Duration
	events               []string
	converge             time.Duration
}

type agent struct {
	name  string
	g     *gossip.Gossip
	store *catalog.Store
	logs  *meshtest.LogBuffer
}

type bench struct {
	p        profile
	o        options
	net      *meshtest.LoopbackNetwork
	key      string
	events   *eventCounter
	deadline time.Time

	mu       sync.Mutex
	seed     string // address of a live agent to join
	agents   []*agent
	gone     map[string]bool // killed or silenced on purpose
	fps      map[string]bool // "observer saw node failed" for live nodes
	suspects int
	next     int

	stopWatch chan struct{}
	watchers  sync.WaitGroup
}

func runProfile(p profile, o options, deadline time.Time) (*result, error) {
	b := &bench{
		p: p, o: o,
		net:       meshtest.NewLoopbackNetwork(),
		events:    &eventCounter{n: map[string]int{}, level: logLevel(o.debug)},
		deadline:  deadline,
		gone:      map[string]bool{},
		fps:       map[string]bool{},
		stopWatch: make(chan struct{}),
	}
	defer b.net.Close()
	defer b.closeAll()
	if o.encrypt {
		k, err := gossip.GenerateKey()
		if err != nil {
			return nil, err
		}
		b.key = k
	}
	r := &result{profile: p.name}
	lagStop := make(chan struct{})
	lags := make(chan []time.Duration, 1)
	go measureLag(lagStop, lags)

	start := time.Now()
	for range o.n {
		if _, err := b.addAgent(); err != nil {
			return nil, err
		}
	}
	if err := b.waitConverged(2 * time.Minute); err != nil {
		return nil, err
	}
	r.converge = time.Since(start)
	fmt.Printf("   converged in %s\n", r.converge.Round(time.Millisecond))
	// Every agent registers one service, as a real node would.
	for _, a := range b.live() {
		if _, err := a.g.SetLocal(record(8080)); err != nil {
			return nil, err
		}
	}
	time.Sleep(5 * time.Second) // let the registrations settle before measuring idle traffic

	// (c) steady state.
	fmt.Printf("   steady-state traffic for %s...\n", o.steady)
	before := b.stats()
	t0 := time.Now()
	time.Sleep(o.steady)
	after := b.stats()
	secs := time.Since(t0).Seconds()
	for name, s1 := range after {
		if s0, ok := before[name]; ok {
			r.sent = append(r.sent, float64(s1.BytesSent()-s0.BytesSent())/secs)
			r.recv = append(r.recv, float64(s1.BytesReceived()-s0.BytesReceived())/secs)
		}
	}

	// (a) registration.
	fmt.Printf("   %d registration trials...\n", o.reg)
	const regTimeout = 10 * time.Second
	for i := range o.reg {
		if err := b.checkTime(); err != nil {
			return nil, err
		}
		live := b.live()
		a := live[rand.IntN(len(live))]
		var v uint64
		d, err := b.timeUntilAll(regTimeout, func() { v, _ = a.g.SetLocal(record(9000 + i)) }, func(s *catalog.Snapshot) bool {
			m, ok := s.Member(a.name)
			return ok && m.Version >= v && len(m.Services) == 1 && m.Services[0].Port == 9000+i
		})
		if err != nil {
			fmt.Printf("   registration trial %d: %v\n", i, err)
			if o.debug {
				b.dumpStale(a, v)
			}
			d = regTimeout
			r.regTO++
		}
		r.reg = append(r.reg, d)
		time.Sleep(200 * time.Millisecond) // space the trials out
	}

	// (b) kill: close the agent's sockets abruptly, no leave.
	fmt.Printf("   %d kill trials...\n", o.kill)
	const killTimeout = 60 * time.Second
	for i := range o.kill {
		if err := b.checkTime(); err != nil {
			return nil, err
		}
		victim := b.pickVictim()
		d, err := b.timeUntilAll(killTimeout, func() { _ = victim.g.Close() }, failedCond(victim.name))
		if err != nil {
			fmt.Printf("   kill trial %d: %v\n", i, err)
			d = killTimeout
			r.killTO++
		}
		r.kill = append(r.kill, d)
		if err := b.replace(); err != nil {
			return nil, err
		}
	}

	// (b') silence: drop all of the agent's traffic; only memberlist's
	// suspicion timer can tell.
	fmt.Printf("   %d silent-failure trials...\n", o.silent)
	const silentTimeout = 90 * time.Second
	for i := range o.silent {
		if err := b.checkTime(); err != nil {
			return nil, err
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
			fmt.Printf("   silent trial %d: %v\n", i, err)
			d = silentTimeout
			r.silTO++
		}
		r.silent = append(r.silent, d)
		_ = victim.g.Close()
		b.net.Heal()
		if err := b.replace(); err != nil {
			return nil, err
		}
	}
	close(b.stopWatch)
	b.watchers.Wait()
	close(lagStop)
	r.lag = <-lags

	b.mu.Lock()
	for fp := range b.fps {
		r.fps = append(r.fps, fp)
	}
	r.suspects = b.suspects
	b.mu.Unlock()
	sort.Strings(r.fps)
	r.events = b.events.top(8)
	return r, nil
}

func report(out *os.File, o options, rs []*result) {
	fmt.Fprintf(out, "\nGossip benchmark: %d agents in one process, each on its own UDP+TCP sockets on 127.0.0.1, encrypt=%v\n\n", o.n, o.encrypt)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "profile\tmeasure\tsamples\tp50\tp99\tmax\ttimed out")
	for _, r := range rs {
		row := func(name string, d []time.Duration, to int) {
			if len(d) == 0 {
				return
			}
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%d\n", r.profile, name, len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(d[len(d)-1]), to)
		}
		row("(a) registration -> all see it", r.reg, r.regTO)
		row("(b) kill -> all see failed", r.kill, r.killTO)
		row("(b') silence -> all see failed", r.silent, r.silTO)
	}
	w.Flush()
	fmt.Fprintln(out)
	for _, r := range rs {
		sort.Float64s(r.sent)
		sort.Float64s(r.recv)
		fmt.Fprintf(out, "%s:\n", r.profile)
		fmt.Fprintf(out, "  (c) steady state over %s, per agent: sent avg %.0f B/s, max %.0f B/s; received avg %.0f B/s, max %.0f B/s\n",
			o.steady, avg(r.sent), last(r.sent), avg(r.recv), last(r.recv))
		fmt.Fprintf(out, "  false positives (live agent shown failed, observer+node pairs): %d; suspect sightings: %d; converged in %s\n",
			len(r.fps), r.suspects, r.converge.Round(time.Millisecond))
		for i, fp := range r.fps {
			if i == 5 {
				fmt.Fprintf(out, "    ... and %d more\n", len(r.fps)-5)
				break
			}
			fmt.Fprintln(out, "    false positive:", fp)
		}
		sort.Slice(r.lag, func(i, j int) bool { return r.lag[i] < r.lag[j] })
		if len(r.lag) > 0 {
			fmt.Fprintf(out, "  machine load: a 10 ms ticker in this process fired late by p50 %s, p99 %s, max %s\n",
				ms(pct(r.lag, 50)), ms(pct(r.lag, 99)), ms(r.lag[len(r.lag)-1]))
		}
		fmt.Fprintln(out, "  most frequent log messages (agent names folded):")
		for _, e := range r.events {
			fmt.Fprintln(out, "   ", e)
		}
	}
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
	cfg := b.p.cfg
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
		Logger:    slog.New(teeHandler{b.events, slog.NewTextHandler(logs, &slog.HandlerOptions{Level: logLevel(b.o.debug)})}),
	})
	if err != nil {
		_ = tr.Shutdown()
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
	b.watchers.Add(1)
	go b.watch(a)
	return a, nil
}

// replace starts a new agent for the one a trial took away, and waits until
// the cluster converged again.
func (b *bench) replace() error {
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
	if _, err := a.g.SetLocal(record(8080)); err != nil {
		return err
	}
	return b.waitConverged(2 * time.Minute)
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

// watch records every sighting of a live agent as failed or left (a false
// positive) and counts suspect sightings, in a's catalog.
func (b *bench) watch(a *agent) {
	defer b.watchers.Done()
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
		case <-b.stopWatch:
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
		sort.Strings(missing)
		return 0, fmt.Errorf("%d agents did not see it within %s (%s)", len(missing), timeout, strings.Join(missing, " "))
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
			return fmt.Errorf("%s: no convergence within %s", b.p.name, timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
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
	select {
	case <-b.stopWatch:
	default:
		close(b.stopWatch)
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func(a *agent) { defer wg.Done(); _ = a.g.Close() }(a)
	}
	wg.Wait()
	b.watchers.Wait()
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

// measureLag samples how late a 10 ms timer fires in this process: the
// delay every agent's timers suffer, which shows how loaded the machine was.
func measureLag(stop chan struct{}, out chan<- []time.Duration) {
	var lags []time.Duration
	const every = 10 * time.Millisecond
	t := time.NewTimer(every)
	next := time.Now().Add(every)
	for {
		select {
		case <-stop:
			t.Stop()
			out <- lags
			return
		case <-t.C:
			lags = append(lags, time.Since(next))
			next = time.Now().Add(every)
			t.Reset(every)
		}
	}
}

func logLevel(debug bool) slog.Level {
	if debug {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// eventCounter is a slog handler that counts the agents' log messages, to
// tell what caused a false positive or a slow trial.
type eventCounter struct {
	level slog.Level
	mu    sync.Mutex
	n     map[string]int
}

func (e *eventCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= e.level }
func (e *eventCounter) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	if msg == "memberlist" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "detail" {
				d := a.Value.String()
				if len(d) > 48 {
					d = d[:48]
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

// teeHandler sends every record to two handlers.
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
