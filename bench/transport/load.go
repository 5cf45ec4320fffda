package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
	"github.com/meshwork/meshwork/bench/internal/histogram"
)

// latency is one fortio run.
type latency struct {
	p50, p90, p99 time.Duration
	// p99Low and p99High are the lowest and highest p99 of the rounds.
	p99Low, p99High time.Duration
	qps             float64
	requests        int64
	errors          int64
	// stolen is the share of this machine's CPU time that the hypervisor
	// gave to other guests during the run (steal in /proc/stat).
	stolen float64
	// hist is fortio's histogram of the run, to pool the rounds with.
	hist []histogram.Bucket
	// pairedAdded is the median, over the rounds, of this path's figure
	// minus direct's figure in the same round; set on tunnels only.
	pairedAdded *[3]time.Duration
}

type fortioResult struct {
	ActualQPS         float64
	RetCodes          map[string]int64
	DurationHistogram struct {
		Count       int64
		Data        []histogram.Bucket
		Percentiles []struct {
			Percentile float64
			Value      float64
		}
	}
}

// runFortio runs fortio on h against the path's HTTP address.
func runFortio(ctx context.Context, h cpuhost.Host, fortio, dir string, p *path) (*latency, error) {
	out := filepath.Join(dir, "fortio-"+p.name+".json")
	ctx, cancel := context.WithTimeout(ctx, *latDur+30*time.Second)
	defer cancel()
	bin, args := h.Command(fortio, "load",
		"-qps", strconv.Itoa(*qps), "-c", strconv.Itoa(*conns), "-t", latDur.String(),
		// -r: 10 µs buckets. Fortio's default (1 ms) interpolates every
		// sub-millisecond percentile inside one bucket.
		"-r", "0.00001",
		// -uniform: the connections' request times spread evenly over
		// each period, so that the load is a steady 1,000 req/s rather
		// than 125 bursts a second of one request per connection.
		"-uniform="+strconv.FormatBool(*uniform),
		"-p", "50,90,99", "-json", out, "-loglevel", "Warning", "-a=false",
		"http://"+p.http+"/")
	if b, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("fortio: %v: %s", err, lastLines(string(b), 5))
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var r fortioResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("fortio json: %w", err)
	}
	l := &latency{qps: r.ActualQPS, requests: r.DurationHistogram.Count, hist: r.DurationHistogram.Data}
	for code, n := range r.RetCodes {
		if code != "200" {
			l.errors += n
		}
	}
	for _, pc := range r.DurationHistogram.Percentiles {
		d := time.Duration(pc.Value * float64(time.Second))
		switch pc.Percentile {
		case 50:
			l.p50 = d
		case 90:
			l.p90 = d
		case 99:
			l.p99 = d
		}
	}
	return l, nil
}

// poolLatency combines the rounds of a path: its percentiles are those of
// all the requests of all its rounds (their histograms pooled), so that
// each path's figures cover the same spells of this noisy machine, the
// paths having taken turns. Errors and requests are summed.
func poolLatency(ls []*latency) *latency {
	var all []histogram.Bucket
	out := &latency{p99Low: ls[0].p99, p99High: ls[0].p99}
	for _, l := range ls {
		all = append(all, l.hist...)
		out.p99Low, out.p99High = min(out.p99Low, l.p99), max(out.p99High, l.p99)
		out.qps += l.qps / float64(len(ls))
		out.stolen += l.stolen / float64(len(ls))
		out.requests += l.requests
		out.errors += l.errors
	}
	out.p50, out.p90, out.p99 = histogram.Percentile(all, 50), histogram.Percentile(all, 90), histogram.Percentile(all, 99)
	return out
}

// pairedAdded is the median over the rounds of what the tunnel's p50, p90
// and p99 add to direct's in the same round: the two ran one after the
// other, so a noisy spell lands on both.
func pairedAdded(tunnel, direct []*latency) *[3]time.Duration {
	n := min(len(tunnel), len(direct))
	if n == 0 {
		return nil
	}
	var out [3]time.Duration
	for k, get := range []func(*latency) time.Duration{
		func(l *latency) time.Duration { return l.p50 },
		func(l *latency) time.Duration { return l.p90 },
		func(l *latency) time.Duration { return l.p99 },
	} {
		d := make([]time.Duration, n)
		for i := range n {
			d[i] = get(tunnel[i]) - get(direct[i])
		}
		slices.Sort(d)
		out[k] = d[n/2]
	}
	return &out
}

// median is the middle of xs (the upper middle of an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// medianRaw is the raw quic-go round of median throughput, whole, so that
// its CPU per GB belongs to the same round.
func medianRaw(rs []rawResult) rawResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b rawResult) int { return cmp.Compare(a.bps, b.bps) })
	return s[len(s)/2]
}

// mergeUsage combines the samples of several runs: the largest RSS, and
// the means of the mean RSS and of the CPU.
func mergeUsage(us []map[string]*resUsage) map[string]*resUsage {
	out := map[string]*resUsage{}
	for _, u := range us {
		for name, r := range u {
			m := out[name]
			if m == nil {
				m = &resUsage{}
				out[name] = m
			}
			m.maxRSS = max(m.maxRSS, r.maxRSS)
			m.avgRSS += r.avgRSS / int64(len(us))
			m.cpu += r.cpu / float64(len(us))
			m.cpuSeconds += r.cpuSeconds
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// runIperf runs one iperf3 client on h over a single TCP connection and
// returns the receiver's rate in bit/s.
func runIperf(ctx context.Context, h cpuhost.Host, target string, d time.Duration) (float64, error) {
	ip, port, err := net.SplitHostPort(target)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	secs := strconv.Itoa(int(d.Seconds()))
	bin, args := h.Command("iperf3", "-c", ip, "-p", port, "-t", secs, "-J")
	b, err := exec.CommandContext(ctx, bin, args...).Output()
	var r struct {
		Error string
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(b, &r); jerr != nil {
		return 0, fmt.Errorf("iperf3: %v (%v)", jerr, err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

// connRateDone is the connection-rate child's last line, after "DONE ".
type connRateDone struct {
	Rate   float64 `json:"rate"`
	Failed int     `json:"failed"`
}

// measureConnRate runs the connection-rate load from a child on h.
func measureConnRate(ctx context.Context, procs *procSet, h cpuhost.Host, target string) (float64, int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	bin, args := h.Command(self, "-role", "connrate", "-target", target,
		"-conn-workers", strconv.Itoa(*workers), "-conn-duration", rateDur.String())
	p, err := procs.start(ctx, "connrate", "READY", bin, args...)
	if err != nil {
		return 0, 0, err
	}
	line, err := p.await("DONE ", *rateDur+30*time.Second)
	if err != nil {
		return 0, 0, err
	}
	var d connRateDone
	if err := json.Unmarshal([]byte(line), &d); err != nil {
		return 0, 0, fmt.Errorf("connrate said %q: %w", line, err)
	}
	return d.Rate, d.Failed, nil
}

// runConnRate is the connection-rate child.
func runConnRate(target string) {
	fmt.Println("READY")
	rate, failed := connectionRate(context.Background(), target, *workers, *rateDur)
	b, _ := json.Marshal(connRateDone{Rate: rate, Failed: failed})
	fmt.Println("DONE " + string(b))
}

// connectionRate opens connections to target from workers goroutines for
// d: connect, send a byte, read it back, close. It returns the rate of
// completed exchanges and the number of failures.
func connectionRate(ctx context.Context, target string, workers int, d time.Duration) (float64, int) {
	var ok, failed atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [1]byte
			for time.Now().Before(deadline) && ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Write([]byte{'x'})
				if err == nil {
					_, err = io.ReadFull(c, b[:])
				}
				c.Close()
				if err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(ok.Load()) / time.Since(start).Seconds(), int(failed.Load())
}

// resUsage is what one process used during a run.
type resUsage struct {
	maxRSS, avgRSS int64   // bytes
	cpu            float64 // CPU seconds per second (1.0 = one core)
	cpuSeconds     float64
}

// sampler reads /proc for some processes every 200ms.
type sampler struct {
	pids  map[string]int
	stopc chan struct{}
	done  chan map[string]*resUsage
}

const clockTicks = 100 // USER_HZ on Linux

func startSampler(pids map[string]int) *sampler {
	s := &sampler{pids: pids, stopc: make(chan struct{}), done: make(chan map[string]*resUsage, 1)}
	go func() {
		start := time.Now()
		cpu0 := map[string]int64{}
		for name, pid := range pids {
			cpu0[name] = cpuTicks(pid)
		}
		sums := map[string]int64{}
		n := 0
		out := map[string]*resUsage{}
		for name := range pids {
			out[name] = &resUsage{}
		}
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				n++
				for name, pid := range pids {
					r := rss(pid)
					sums[name] += r
					if r > out[name].maxRSS {
						out[name].maxRSS = r
					}
				}
			case <-s.stopc:
				el := time.Since(start).Seconds()
				for name, pid := range pids {
					if n > 0 {
						out[name].avgRSS = sums[name] / int64(n)
					}
					out[name].cpuSeconds = float64(cpuTicks(pid)-cpu0[name]) / clockTicks
					out[name].cpu = out[name].cpuSeconds / el
				}
				s.done <- out
				return
			}
		}
	}()
	return s
}

func (s *sampler) stop() map[string]*resUsage {
	close(s.stopc)
	return <-s.done
}

// rss reads VmRSS of pid in bytes.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTicks reads utime+stime of pid.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// The command name may hold spaces; fields start after the last ')'.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// cpuTimes reads the steal and total ticks of all CPUs from /proc/stat.
func cpuTimes() (steal, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i < 8 { // guest time is already counted in user
			total += n
		}
		if i == 7 {
			steal = n
		}
	}
	return steal, total
}

// stolenSince is the share of CPU time stolen since the earlier reading.
func stolenSince(steal0, total0 int64) float64 {
	steal, total := cpuTimes()
	if total <= total0 {
		return 0
	}
	return float64(steal-steal0) / float64(total-total0)
}
