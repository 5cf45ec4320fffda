// Command l7framing measures, in one process and one run on loopback, how
// two agents should frame HTTP requests between them on their one QUIC
// connection (issue 25). A Go net/http client sends HTTP/1.1 POSTs with a
// 1 KiB body to a Go net/http app that answers 1 KiB, along three paths:
//
//   - direct: client → app;
//   - http3: client → caller hop (an http.Handler) → HTTP/3 (quic-go/http3)
//     on one QUIC connection with mutual TLS → far hop (an http3.Server
//     handler) → app over a keep-alive HTTP/1.1 pool;
//   - stream: client → caller hop → one fresh QUIC stream per request on
//     one QUIC connection with mutual TLS, carrying the tunnel's wire
//     header (transport/wire, its timeout the remaining budget) and then
//     the request in HTTP/1.1 form (Request.Write); the far hop answers a
//     status frame and the response (Response.Write) → app over the same
//     kind of pool;
//   - stream-wait: stream, but under today's OpenStream contract: the
//     caller sends the request only once the far hop's status frame came
//     back, one more round trip per request.
//
// The hops are prototypes, not the L7 handler: no routing, no policy, no
// trailers. Both framings share the same far-side pool to the app, so that
// only the framing between the hops differs. For each path it reports:
//
//  1. p50/p99/p99.9 latency at a fixed rate (-rate for -duration, 16
//     keep-alive client connections, counted from when each request was
//     due), with the CPU seconds the whole process spent per 1,000
//     requests (getrusage) and the allocations per request
//     (runtime.MemStats); the hops' share is the path's figure less
//     direct's, since client and app run in the same process;
//  2. the maximum rate of -workers closed-loop workers for -max-duration;
//  3. head of line: the fast requests' latency at -rate while one client
//     connection sends requests that the app holds 200 ms, all on the same
//     hops and QUIC connection.
//
// Each phase runs -rounds times, the paths taking turns in an order that
// rotates each round, and a path's rounds are pooled, so that the noise of
// a shared machine falls on every path alike; the report says how much CPU
// other processes took meanwhile. Everything runs on loopback in this
// process; every load is bounded in count and time.
//
//	go run ./bench/l7framing
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

type options struct {
	rounds      int
	rate        float64
	duration    time.Duration
	conns       int
	workers     int
	maxDuration time.Duration
	holDuration time.Duration
	warmup      time.Duration
}

// pathResult is every figure of one path.
type pathResult struct {
	name   string
	fixed  *latencies
	fixedC cost
	// maxRates is the rate of each round; the report gives their median.
	maxRates []float64
	maxFail  int64
	maxErr   error
	maxC     cost
	hol      holResult
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of each phase; the paths take turns in rotating order within each")
	flag.Float64Var(&o.rate, "rate", 1000, "requests per second of the fixed-rate and head-of-line phases")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of the fixed-rate phase, per path and round")
	flag.IntVar(&o.conns, "conns", 16, "client connections of the fixed-rate phase")
	flag.IntVar(&o.workers, "workers", 64, "closed-loop workers (and client connections) of the maximum-rate phase")
	flag.DurationVar(&o.maxDuration, "max-duration", 5*time.Second, "length of the maximum-rate phase, per path and round")
	flag.DurationVar(&o.holDuration, "hol-duration", 2*time.Second, "length of the head-of-line phase, per path and round")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "closed-loop warm-up before each path's phases")
	flag.Parse()
	if o.rounds < 1 || o.rate <= 0 || o.conns < 1 || o.workers < 1 {
		fmt.Fprintln(os.Stderr, "l7framing: -rounds, -rate, -conns and -workers must be positive")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "l7framing:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	defer e.close()

	results := make([]*pathResult, len(e.paths))
	for i, p := range e.paths {
		results[i] = &pathResult{name: p.name}
	}
	started := time.Now()
	machine0, self0 := machineBusy(), readUsage().cpu

	// The paths take turns, in an order that rotates each round, so that
	// the noise of a shared machine falls on all of them alike.
	order := func(round int) []int {
		idx := make([]int, len(e.paths))
		for i := range idx {
			idx[i] = (i + round) % len(e.paths)
		}
		return idx
	}
	// Warm every path up once: connections, pools, the QUIC windows.
	for _, p := range e.paths {
		c := newClient(o.workers)
		maxRate(ctx, c, p.url+echoPath, o.workers, o.warmup, 1<<20)
		c.CloseIdleConnections()
	}
	// 1. Fixed rate.
	for round := range o.rounds {
		for _, i := range order(round) {
			p, r := e.paths[i], results[i]
			c := newClient(o.conns)
			maxRate(ctx, c, p.url+echoPath, o.conns, o.warmup/4, 1<<20) // open the connections
			runtime.GC()
			before := readUsage()
			l := fixedRate(ctx, c, p.url+echoPath, o.rate, o.duration, o.conns)
			r.fixedC = r.fixedC.add(costSince(before, len(l.d)+l.errors), len(l.d)+l.errors)
			r.fixed = r.fixed.merge(l)
			c.CloseIdleConnections()
			fmt.Fprintf(os.Stderr, "round %d fixed rate %s: p99 %s, %d errors\n", round, p.name, l.quantile(0.99), l.errors)
		}
	}
	// 2. Maximum rate.
	for round := range o.rounds {
		for _, i := range order(round) {
			p, r := e.paths[i], results[i]
			c := newClient(o.workers)
			maxRate(ctx, c, p.url+echoPath, o.workers, o.warmup/4, 1<<20)
			runtime.GC()
			before := readUsage()
			t0 := time.Now()
			ok, failed, first := maxRate(ctx, c, p.url+echoPath, o.workers, o.maxDuration, 1<<24)
			secs := time.Since(t0).Seconds()
			r.maxRates = append(r.maxRates, float64(ok)/secs)
			r.maxFail += failed
			if r.maxErr == nil {
				r.maxErr = first
			}
			r.maxC = r.maxC.add(costSince(before, int(ok+failed)), int(ok+failed))
			c.CloseIdleConnections()
			fmt.Fprintf(os.Stderr, "round %d max rate %s: %.0f req/s, %d errors\n", round, p.name, float64(ok)/secs, failed)
		}
	}
	// 3. Head of line.
	for round := range o.rounds {
		for _, i := range order(round) {
			p, r := e.paths[i], results[i]
			c := newClient(o.conns)
			maxRate(ctx, c, p.url+echoPath, o.conns, o.warmup/4, 1<<20)
			h := headOfLine(ctx, c, p.url, o.rate, o.holDuration, o.conns)
			r.hol.fast = r.hol.fast.merge(h.fast)
			r.hol.slowN += h.slowN
			r.hol.slowErr += h.slowErr
			r.hol.slowP50 = max(r.hol.slowP50, h.slowP50)
			c.CloseIdleConnections()
		}
	}
	others := machineBusy() - machine0 - (readUsage().cpu - self0)
	if err := ctx.Err(); err != nil {
		return err
	}
	report(o, results, time.Since(started), others)
	return nil
}

func msStr(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func report(o options, rs []*pathResult, took, others time.Duration) {
	direct := rs[0]
	fmt.Printf("l7framing: %s, %s, GOMAXPROCS %d of %d CPUs, quic-go %s, %s, %d rounds\n",
		time.Now().UTC().Format(time.RFC3339), runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), quicVersion(), took.Round(time.Second), o.rounds)
	fmt.Printf("1 KiB POST, 1 KiB answer; everything (client, hops, app) in one process on loopback.\n")
	fmt.Printf("Other processes (and the hypervisor's steal) took %.2f CPUs on average during the run.\n\n", others.Seconds()/took.Seconds())

	fmt.Printf("Fixed rate: %.0f req/s for %s per round, %d client connections; latency in ms from when each request was due; CPU and allocations of the whole process, and the hops' share (less direct).\n\n", o.rate, o.duration, o.conns)
	fmt.Println("| path | requests | errors | p50 | p99 | p99.9 | p99 added | CPU s / 1k req | hops' CPU s / 1k req | allocs / req | hops' allocs / req | hops' KiB / req |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		l := r.fixed
		fmt.Printf("| %s | %d | %d | %s | %s | %s | %s | %.3f | %.3f | %.0f | %.0f | %.1f |\n",
			r.name, len(l.d), l.errors, msStr(l.quantile(0.50)), msStr(l.quantile(0.99)), msStr(l.quantile(0.999)),
			msStr(l.quantile(0.99)-direct.fixed.quantile(0.99)),
			r.fixedC.cpuPerK, r.fixedC.cpuPerK-direct.fixedC.cpuPerK,
			r.fixedC.allocsPerReq, r.fixedC.allocsPerReq-direct.fixedC.allocsPerReq,
			(r.fixedC.bytesPerReq-direct.fixedC.bytesPerReq)/1024)
	}
	fmt.Printf("\nMaximum rate: %d closed-loop workers (one client connection each) for %s per round; the median round, and the rounds.\n\n", o.workers, o.maxDuration)
	fmt.Println("| path | req/s | × direct | rounds | errors | CPU s / 1k req | hops' CPU s / 1k req | allocs / req |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	directRate := median(direct.maxRates)
	for _, r := range rs {
		rate := median(r.maxRates)
		rounds := make([]string, len(r.maxRates))
		for i, v := range r.maxRates {
			rounds[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Printf("| %s | %.0f | %.2f | %s | %d | %.3f | %.3f | %.0f |\n",
			r.name, rate, rate/directRate, strings.Join(rounds, ", "), r.maxFail, r.maxC.cpuPerK, r.maxC.cpuPerK-direct.maxC.cpuPerK, r.maxC.allocsPerReq)
	}
	fmt.Printf("\nHead of line: fast requests at %.0f req/s for %s per round while one connection sends requests the app holds %s, back to back (ms).\n\n", o.rate, o.holDuration, slowDelay)
	fmt.Println("| path | fast requests | errors | fast p50 | fast p99 | fast p99.9 | fast max | p99 without slow ones | slow requests | slow p50 |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		h := r.hol
		fmt.Printf("| %s | %d | %d | %s | %s | %s | %s | %s | %d | %s |\n",
			r.name, len(h.fast.d), h.fast.errors+h.slowErr, msStr(h.fast.quantile(0.50)), msStr(h.fast.quantile(0.99)),
			msStr(h.fast.quantile(0.999)), msStr(h.fast.quantile(1)), msStr(r.fixed.quantile(0.99)), h.slowN, msStr(h.slowP50))
	}
	for _, r := range rs {
		for _, err := range []error{r.fixed.first, r.maxErr, r.hol.fast.first} {
			if err != nil {
				fmt.Printf("\n%s: first error: %v\n", r.name, err)
				break
			}
		}
	}
}

// quicVersion is the quic-go version this binary was built with.
func quicVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/quic-go/quic-go" {
				return m.Version
			}
		}
	}
	return "unknown"
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

// machineBusy is the CPU time every process of the machine used so far,
// and what the hypervisor stole, from /proc/stat; 0 where it is missing.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i, v := range f[1:] {
		if i >= 8 {
			break // guest time is counted in user already
		}
		if i == 3 || i == 4 {
			continue // idle, iowait
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
