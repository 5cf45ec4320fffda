package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/meshwork/meshwork/bench/internal/histogram"
)

// Issue 25's targets.
const (
	targetL7OverL4  = 150 * time.Microsecond // L7's added p99 above L4's
	targetCPU       = 0.10                   // vCPU per 1,000 req/s per agent
	targetRSSBytes  = 40e6                   // agent RSS, 40 MB
	targetMaxRatio  = 0.5                    // mesh max rate over direct's
	targetGRPCAdded = 500 * time.Microsecond // gRPC's added p99
)

// report collects every run and prints the tables and the checks.
type report struct {
	startLoad, fortioLoad, wrkLoad, endLoad string
	useGhz                                  bool

	lat, max, grpc map[string][]*result // path -> its rounds, in order

	// l7SpliceStreams and grpcSpliceStreams are what the server agent's L4
	// splice took during the L7 path's fortio rounds and the gRPC mesh
	// rounds: zero when the per-request handler carries web-l7 and ping.
	l7SpliceStreams, grpcSpliceStreams, spliceStreams float64
	spliceErr                                         error            // reading the metric failed: no verdict
	peak                                              map[string]int64 // agent -> VmHWM at the end, KiB
	upload                                            *result          // the 1 GiB upload through L7
}

func (r *report) addLatency(path string, res *result) { r.lat = add(r.lat, path, res) }
func (r *report) addMax(path string, res *result)     { r.max = add(r.max, path, res) }
func (r *report) addGRPC(path string, res *result)    { r.grpc = add(r.grpc, path, res) }

func add(m map[string][]*result, path string, res *result) map[string][]*result {
	if m == nil {
		m = map[string][]*result{}
	}
	m[path] = append(m[path], res)
	return m
}

// pooled is the percentile q of all the rounds' requests together.
func pooled(rs []*result, q float64) time.Duration {
	var all []histogram.Bucket
	for _, r := range rs {
		all = append(all, r.hist...)
	}
	return histogram.Percentile(all, q)
}

// pairedAdded is the median over the rounds of the path's percentile q
// minus base's in the same round: the two ran one after the other, so a
// noisy spell lands on both.
func pairedAdded(path, base []*result, q float64) time.Duration {
	n := min(len(path), len(base))
	if n == 0 {
		return 0
	}
	d := make([]time.Duration, n)
	for i := range n {
		d[i] = histogram.Percentile(path[i].hist, q) - histogram.Percentile(base[i].hist, q)
	}
	slices.Sort(d)
	return d[n/2]
}

// perThousand is a process's CPU seconds per 1,000 requests over the
// rounds: at 1,000 req/s, the vCPU it needs.
func perThousand(rs []*result, name string) float64 {
	var cpu float64
	var n int64
	for _, r := range rs {
		cpu += r.use[name].cpu
		n += r.requests
	}
	if n == 0 {
		return 0
	}
	return cpu / (float64(n) / 1000)
}

// maxRSS is a process's largest sampled VmRSS over the rounds, KiB.
func maxRSS(rs []*result, name string) int64 {
	var m int64
	for _, r := range rs {
		m = max(m, r.use[name].maxRSS)
	}
	return m
}

// others is the CPU the rest of the machine used during the rounds, in
// vCPU: the busy time of all CPUs less what this run's processes and load
// generators used; and the share of the CPUs' time stolen.
func others(rs []*result) (vcpu, stolen float64) {
	var busy, ours, steal, wall float64
	for _, r := range rs {
		busy += r.mach.busy
		steal += r.mach.steal
		wall += r.mach.wall
		ours += r.loadCPU
		for _, u := range r.use {
			ours += u.cpu
		}
	}
	if wall == 0 {
		return 0, 0
	}
	return max(0, busy-ours) / wall, steal / (wall * float64(runtime.NumCPU()))
}

func sumRequests(rs []*result) (n, errs int64) {
	for _, r := range rs {
		n += r.requests
		errs += r.errors
	}
	return n, errs
}

func medianRate(rs []*result) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.rate
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

// byRound lists each round's percentile q.
func byRound(rs []*result, q float64) string {
	s := make([]string, len(rs))
	for i, res := range rs {
		s[i] = ms(histogram.Percentile(res.hist, q))
	}
	return strings.Join(s, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()*1000) }

func mib(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

// table prints a markdown table with a column per path.
type table struct {
	w     io.Writer
	paths []string
}

func (t table) head(first string) {
	fmt.Fprintf(t.w, "| %s | %s |\n|---|%s\n", first, strings.Join(t.paths, " | "), strings.Repeat("---:|", len(t.paths)))
}

func (t table) row(label string, cell func(path string) string) {
	cells := make([]string, len(t.paths))
	for i, p := range t.paths {
		cells[i] = cell(p)
	}
	fmt.Fprintf(t.w, "| %s | %s |\n", label, strings.Join(cells, " | "))
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## bench/l7, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))

	// 1,000 req/s.
	fmt.Fprintf(w, "fortio load -qps %d -c %d -uniform=%t -t %s -r 0.00001, 1 KiB answers, rounds: %d (percentiles of all rounds' requests together)\n\n",
		*qps, *conns, *uniform, *duration, *rounds)
	t := table{w: w, paths: httpPaths}
	t.head("")
	t.row("requests (errors)", func(p string) string {
		n, e := sumRequests(r.lat[p])
		return fmt.Sprintf("%d (%d)", n, e)
	})
	for _, q := range []float64{50, 99, 99.9} {
		t.row(fmt.Sprintf("p%g ms", q), func(p string) string { return ms(pooled(r.lat[p], q)) })
	}
	t.row("p99 ms by round", func(p string) string { return byRound(r.lat[p], 99) })
	t.row("added p99 ms, median of rounds", func(p string) string {
		if p == pathDirect {
			return "—"
		}
		return ms(pairedAdded(r.lat[p], r.lat[pathDirect], 99))
	})
	for _, name := range []string{"client agent", "server agent", "HAProxy client", "HAProxy server", "app"} {
		t.row(name+" CPU s per 1,000 req", func(p string) string { return fmt.Sprintf("%.3f", perThousand(r.lat[p], name)) })
	}
	for _, name := range []string{"client agent", "server agent"} {
		t.row(name+" max RSS MiB", func(p string) string { return mib(maxRSS(r.lat[p], name)) })
	}
	t.row("rest of the machine, vCPU (stolen)", func(p string) string {
		v, s := others(r.lat[p])
		return fmt.Sprintf("%.2f (%.1f %%)", v, s*100)
	})

	// Maximum rate.
	fmt.Fprintf(w, "\nwrk -t%d -c%d -d%s (HTTP/1.1, keep-alive), rounds: %d, median round\n\n", *wrkThreads, *wrkConns, *wrkDuration, *wrkRounds)
	t.head("")
	t.row("req/s (rounds)", func(p string) string {
		var s []string
		for _, res := range r.max[p] {
			s = append(s, fmt.Sprintf("%.0f", res.rate))
		}
		return fmt.Sprintf("%.0f (%s)", medianRate(r.max[p]), strings.Join(s, ", "))
	})
	t.row("× direct", func(p string) string { return fmt.Sprintf("%.2f", medianRate(r.max[p])/medianRate(r.max[pathDirect])) })
	t.row("errors", func(p string) string { _, e := sumRequests(r.max[p]); return fmt.Sprint(e) })
	for _, name := range []string{"client agent", "server agent", "HAProxy client", "HAProxy server"} {
		t.row(name+" CPU s per 1,000 req", func(p string) string { return fmt.Sprintf("%.3f", perThousand(r.max[p], name)) })
	}
	for _, name := range []string{"client agent", "server agent"} {
		t.row(name+" max RSS MiB", func(p string) string { return mib(maxRSS(r.max[p], name)) })
	}
	t.row("rest of the machine, vCPU (stolen)", func(p string) string {
		v, s := others(r.max[p])
		return fmt.Sprintf("%.2f (%.1f %%)", v, s*100)
	})

	// gRPC.
	tool := fmt.Sprintf("ghz --rps %d -c %d --connections 1 -z %s, fgrpc.PingServer.Ping with 1 KiB each way (fortio's ping server); exact percentiles", *grpcRate, *grpcConc, *grpcDuration)
	if !r.useGhz {
		tool = fmt.Sprintf("fortio load -grpc -ping -qps %d -c %d -t %s, 1 KiB payload", *grpcRate, *grpcConc, *grpcDuration)
	}
	fmt.Fprintf(w, "\n%s, rounds: %d\n\n", tool, *grpcRounds)
	g := table{w: w, paths: []string{pathDirect, pathMesh}}
	g.head("")
	g.row("calls (errors; cut by the load generator's end, not counted)", func(p string) string {
		n, e := sumRequests(r.grpc[p])
		var cut int64
		for _, res := range r.grpc[p] {
			cut += res.cut
		}
		return fmt.Sprintf("%d (%d; %d)", n, e, cut)
	})
	for _, q := range []float64{50, 99, 99.9} {
		g.row(fmt.Sprintf("p%g ms", q), func(p string) string { return ms(pooled(r.grpc[p], q)) })
	}
	g.row("p99 ms by round", func(p string) string { return byRound(r.grpc[p], 99) })
	g.row("added p99 ms, median of rounds", func(p string) string {
		if p == pathDirect {
			return "—"
		}
		return ms(pairedAdded(r.grpc[p], r.grpc[pathDirect], 99))
	})
	for _, name := range []string{"client agent", "server agent", "gRPC app"} {
		g.row(name+" CPU s per 1,000 calls", func(p string) string { return fmt.Sprintf("%.3f", perThousand(r.grpc[p], name)) })
	}
	g.row("rest of the machine, vCPU (stolen)", func(p string) string {
		v, s := others(r.grpc[p])
		return fmt.Sprintf("%.2f (%.1f %%)", v, s*100)
	})

	if u := r.upload; u != nil {
		fmt.Fprintf(w, "\n1 GiB upload of unknown length (chunked) through L7: %.0f MB/s; agents' RSS while it streamed, largest sample: client %s MiB, server %s MiB\n",
			u.rate/1e6, mib(maxRSS([]*result{u}, "client agent")), mib(maxRSS([]*result{u}, "server agent")))
	}
	fmt.Fprintf(w, "\nload average (1, 5, 15 min): start %s; after fortio %s; after wrk %s; end %s\n", r.startLoad, r.fortioLoad, r.wrkLoad, r.endLoad)
	fmt.Fprintf(w, "agents' peak RSS since start (VmHWM): client %s MiB, server %s MiB\n", mib(r.peak["client agent"]), mib(r.peak["server agent"]))
	switch {
	case r.spliceErr != nil:
		fmt.Fprintf(w, "whether the L7 path was carried per request is UNKNOWN: %v\n", r.spliceErr)
	case r.l7SpliceStreams > 0:
		fmt.Fprintf(w, "the L7 path was carried PER CONNECTION: the server agent's L4 splice took %.0f streams during its fortio rounds "+
			"(%d connections a round); the L7 column measures the L4 path until the per-request handler carries protocol http\n",
			r.l7SpliceStreams, *conns)
	default:
		fmt.Fprintf(w, "the L7 path was carried per request: the server agent's L4 splice took no stream during its fortio rounds (%.0f in the whole run)\n", r.spliceStreams)
	}

	fmt.Fprintf(w, "\nissue 25's targets (informative):\n\n")
	check := func(ok bool, format string, args ...any) {
		verdict := "FAIL"
		if ok {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "- %s %s\n", verdict, fmt.Sprintf(format, args...))
	}
	asL4 := ""
	if r.l7SpliceStreams > 0 {
		asL4 = " [the L7 path was carried per connection: L4's figure]"
	}
	l7OverL4 := pairedAdded(r.lat[pathL7], r.lat[pathL4], 99)
	check(l7OverL4 <= targetL7OverL4, "L7's added p99 above L4's: %s ms, median of rounds (pooled: %s ms); target ≤ %s ms%s",
		ms(l7OverL4), ms(pooled(r.lat[pathL7], 99)-pooled(r.lat[pathL4], 99)), ms(targetL7OverL4), asL4)
	for _, name := range []string{"client agent", "server agent"} {
		c := perThousand(r.lat[pathL7], name)
		check(c <= targetCPU, "%s CPU on the L7 path at %d req/s: %.3f vCPU per 1,000 req/s; target ≤ %.2f%s", name, *qps, c, targetCPU, asL4)
	}
	for _, name := range []string{"client agent", "server agent"} {
		var all []*result
		for _, m := range []map[string][]*result{r.lat, r.max, r.grpc} {
			for _, rs := range m {
				all = append(all, rs...)
			}
		}
		kib := maxRSS(all, name)
		check(float64(kib)*1024 <= targetRSSBytes, "%s RSS, largest sample under every load: %.1f MB (%s MiB); target ≤ 40 MB", name, float64(kib)*1024/1e6, mib(kib))
	}
	l7, direct, hp := medianRate(r.max[pathL7]), medianRate(r.max[pathDirect]), medianRate(r.max[pathHAProxy])
	check(l7 >= targetMaxRatio*direct, "L7 maximum rate %.0f req/s = %.2f× direct (%.0f); target ≥ %.1f×%s", l7, l7/direct, direct, targetMaxRatio, asL4)
	check(l7 > hp, "L7 maximum rate %.0f req/s above the HAProxy pair's %.0f%s", l7, hp, asL4)
	ga := pairedAdded(r.grpc[pathMesh], r.grpc[pathDirect], 99)
	grpcAsL4 := ""
	if r.grpcSpliceStreams > 0 {
		grpcAsL4 = fmt.Sprintf(" [carried per connection: the L4 splice took %.0f streams]", r.grpcSpliceStreams)
	}
	check(ga <= targetGRPCAdded, "gRPC added p99 at %d calls/s: %s ms, median of rounds; target ≤ %s ms%s", *grpcRate, ms(ga), ms(targetGRPCAdded), grpcAsL4)
	var errs int64
	for _, m := range []map[string][]*result{r.lat, r.max, r.grpc} {
		for _, rs := range m {
			_, e := sumRequests(rs)
			errs += e
		}
	}
	var first string
	for _, m := range []map[string][]*result{r.lat, r.max, r.grpc} {
		for p, rs := range m {
			for _, res := range rs {
				if first == "" && res.firstError != "" {
					first = fmt.Sprintf(" (first, %s path: %s)", p, res.firstError)
				}
			}
		}
	}
	check(errs == 0, "no failed request on any path: %d failed%s", errs, first)
}
