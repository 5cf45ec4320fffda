//go:build e2e

// Command restartload is the application of the booted-host restart test
// (restart_test.go). On the instance's host it serves an echo service; on
// the caller's host it loads the mesh as an application would while an
// agent restarts or upgrades:
//
//   - requests at -rate per second, each on a new TCP connection to the
//     service's VIP: it writes a line and waits for its echo;
//   - DNS queries at -dns-rate per second to the local agent, each given
//     -dns-timeout for its answer;
//   - -long long-lived connections, each exchanging a line every 50 ms.
//
// The load starts once a request has gone through and every long-lived
// connection is open; then it prints "started" on stderr. A line on
// standard input marks the end of the action under test: the load goes
// on for -tail more requests, then stops, waits for what is in flight
// (bounded by -timeout) and prints a JSON report on stdout. Everything is
// bounded in count and time: at most -max-duration of load.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: restartload serve|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "restartload:", err)
		os.Exit(1)
	}
}

// serve echoes every connection's bytes back.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "address to echo on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// Report is what load prints.
type Report struct {
	Requests  int      `json:"requests"`
	OK        int      `json:"ok"`
	Refused   int      `json:"refused"`
	Reset     int      `json:"reset"`
	TimedOut  int      `json:"timed_out"`
	Other     int      `json:"other"`
	Errors    []string `json:"errors,omitempty"` // the first few
	MaxWaitMS float64  `json:"max_wait_ms"`      // dial to echo, the longest
	P50MS     float64  `json:"p50_ms"`
	P99MS     float64  `json:"p99_ms"`
	// Over1s counts the requests that waited longer than a second.
	Over1s int `json:"over_1s"`
	// Slowest are the starts (wall clock) and waits of the slowest
	// requests, and FailedAt the starts of the first failed ones: to be
	// matched with the agents' journals.
	Slowest  []string `json:"slowest,omitempty"`
	FailedAt []string `json:"failed_at,omitempty"`
	// Timeline is the requests by the quarter second they started in:
	// the start, how many, and their median and longest waits.
	Timeline []string `json:"timeline,omitempty"`

	DNSSent       int      `json:"dns_sent"`
	DNSAnswered   int      `json:"dns_answered"`
	DNSUnanswered int      `json:"dns_unanswered"`
	DNSNotNoError int      `json:"dns_not_noerror"` // answered, with another rcode
	DNSMaxMS      float64  `json:"dns_max_ms"`
	DNSErrors     []string `json:"dns_errors,omitempty"`

	Long         int      `json:"long"`
	LongSurvived int      `json:"long_survived"`
	LongErrors   []string `json:"long_errors,omitempty"`
}

type loadConfig struct {
	addr, dnsAddr, name          string
	rate, dnsRate, long, tail    int
	timeout, dnsTimeout, maxLoad time.Duration
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	var cfg loadConfig
	fs.StringVar(&cfg.addr, "addr", "", "the service's VIP, ip:port")
	fs.StringVar(&cfg.dnsAddr, "dns", "127.0.0.1:8600", "the local agent's DNS")
	fs.StringVar(&cfg.name, "name", "echo.service.mesh.", "the name to query")
	fs.IntVar(&cfg.rate, "rate", 500, "requests per second, each on a new connection")
	fs.IntVar(&cfg.dnsRate, "dns-rate", 200, "DNS queries per second")
	fs.IntVar(&cfg.long, "long", 4, "long-lived connections")
	fs.IntVar(&cfg.tail, "tail", 1000, "requests made after the mark before the load stops")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "deadline of one request")
	fs.DurationVar(&cfg.dnsTimeout, "dns-timeout", time.Second, "deadline of one DNS answer")
	fs.DurationVar(&cfg.maxLoad, "max-duration", 2*time.Minute, "the longest the load runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.addr == "" {
		return errors.New("-addr is required")
	}
	if err := warmUp(cfg); err != nil {
		return err
	}
	l := &loader{cfg: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.maxLoad)
	defer cancel()
	longs, err := l.openLong(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "started")

	marked := make(chan struct{})
	go func() {
		// The mark, or standard input's end: the action is over.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(marked)
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.requests(ctx, marked) }()
	go func() { defer wg.Done(); l.queries(ctx) }()
	wg.Wait() // requests ends the load, and cancels nothing: queries stop with it
	longs.stop()
	l.inflight.Wait()
	longs.wait()
	rep := l.report(longs)
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// warmUp waits, for up to a minute, until one request goes through: the
// mesh has the service. Its failures are not counted.
func warmUp(cfg loadConfig) error {
	deadline := time.Now().Add(time.Minute)
	var err error
	for time.Now().Before(deadline) {
		if _, err = request(cfg.addr, 0, 5*time.Second); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond) // a retry pace, not a wait for an event
	}
	return fmt.Errorf("warm-up: %s never answered: %w", cfg.addr, err)
}

type loader struct {
	cfg      loadConfig
	inflight sync.WaitGroup
	stopping atomic.Bool // set when requests stops; queries follows

	mu       sync.Mutex
	rep      Report
	waits    []timedWait
	dnsWaits []time.Duration
}

// timedWait is one request's wait and when it started.
type timedWait struct {
	start time.Time
	wait  time.Duration
}

// requests makes cfg.rate requests a second until cfg.tail requests after
// the mark, or ctx ends.
func (l *loader) requests(ctx context.Context, marked <-chan struct{}) {
	defer l.stopping.Store(true)
	tick := time.NewTicker(time.Second / time.Duration(l.cfg.rate))
	defer tick.Stop()
	afterMark := -1
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-marked:
			// Once: a closed channel is always ready, and would turn the
			// rest of the load into one burst.
			afterMark, marked = 0, nil
			continue
		case <-tick.C:
		}
		if afterMark >= l.cfg.tail {
			return
		}
		if afterMark >= 0 {
			afterMark++
		}
		l.inflight.Add(1)
		go func() {
			defer l.inflight.Done()
			start := time.Now()
			wait, err := request(l.cfg.addr, n, l.cfg.timeout)
			l.mu.Lock()
			defer l.mu.Unlock()
			l.rep.Requests++
			if err == nil {
				l.rep.OK++
				l.waits = append(l.waits, timedWait{start, wait})
				return
			}
			if len(l.rep.FailedAt) < 10 {
				l.rep.FailedAt = append(l.rep.FailedAt, start.UTC().Format(stampFormat))
			}
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				l.rep.Refused++
			case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				l.rep.Reset++
			case errors.Is(err, os.ErrDeadlineExceeded):
				l.rep.TimedOut++
			default:
				l.rep.Other++
			}
			if len(l.rep.Errors) < 10 {
				l.rep.Errors = append(l.rep.Errors, err.Error())
			}
		}()
	}
}

// request opens a connection, writes one line and reads its echo.
func request(addr string, n int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(timeout))
	line := fmt.Sprintf("request %d\n", n)
	if _, err := io.WriteString(c, line); err != nil {
		return 0, err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	if got != line {
		return 0, fmt.Errorf("echo %q, want %q", got, line)
	}
	return time.Since(start), nil
}

// queries sends cfg.dnsRate queries a second until requests stops.
func (l *loader) queries(ctx context.Context) {
	tick := time.NewTicker(time.Second / time.Duration(l.cfg.dnsRate))
	defer tick.Stop()
	client := &dns.Client{Net: "udp", Timeout: l.cfg.dnsTimeout}
	for !l.stopping.Load() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		l.inflight.Add(1)
		go func() {
			defer l.inflight.Done()
			q := new(dns.Msg)
			q.SetQuestion(l.cfg.name, dns.TypeA)
			start := time.Now()
			resp, _, err := client.Exchange(q, l.cfg.dnsAddr)
			wait := time.Since(start)
			l.mu.Lock()
			defer l.mu.Unlock()
			l.rep.DNSSent++
			if err != nil || wait > l.cfg.dnsTimeout {
				l.rep.DNSUnanswered++
				if err != nil && len(l.rep.DNSErrors) < 10 {
					l.rep.DNSErrors = append(l.rep.DNSErrors, err.Error())
				}
				return
			}
			l.rep.DNSAnswered++
			l.dnsWaits = append(l.dnsWaits, wait)
			if resp.Rcode != dns.RcodeSuccess {
				l.rep.DNSNotNoError++
			}
		}()
	}
}

// longConns are the long-lived connections.
type longConns struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []string
	n    int
}

func (lc *longConns) stop() { close(lc.done) }
func (lc *longConns) wait() { lc.wg.Wait() }

// openLong opens cfg.long connections, each exchanging a line every 50 ms
// until stopped; a connection that fails is recorded and not reopened.
func (l *loader) openLong(ctx context.Context) (*longConns, error) {
	lc := &longConns{done: make(chan struct{}), n: l.cfg.long}
	for i := range l.cfg.long {
		c, err := net.DialTimeout("tcp", l.cfg.addr, l.cfg.timeout)
		if err != nil {
			lc.stop()
			lc.wait()
			return nil, fmt.Errorf("long-lived connection %d: %w", i, err)
		}
		lc.wg.Add(1)
		go func() {
			defer lc.wg.Done()
			defer c.Close()
			r := bufio.NewReader(c)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-lc.done:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				_ = c.SetDeadline(time.Now().Add(l.cfg.timeout))
				line := fmt.Sprintf("long %d %d\n", i, n)
				_, err := io.WriteString(c, line)
				var got string
				if err == nil {
					got, err = r.ReadString('\n')
				}
				if err == nil && got != line {
					err = fmt.Errorf("echo %q, want %q", got, line)
				}
				if err != nil {
					lc.mu.Lock()
					lc.errs = append(lc.errs, fmt.Sprintf("connection %d after %d exchanges: %v", i, n, err))
					lc.mu.Unlock()
					return
				}
			}
		}()
	}
	return lc, nil
}

func (l *loader) report(lc *longConns) Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rep
	slices.SortFunc(l.waits, func(a, b timedWait) int { return int(a.wait - b.wait) })
	if n := len(l.waits); n > 0 {
		r.P50MS = ms(l.waits[n/2].wait)
		r.P99MS = ms(l.waits[n*99/100].wait)
		r.MaxWaitMS = ms(l.waits[n-1].wait)
		for _, w := range l.waits {
			if w.wait > time.Second {
				r.Over1s++
			}
		}
		for i := n - 1; i >= 0 && i >= n-5; i-- {
			r.Slowest = append(r.Slowest, fmt.Sprintf("%s waited %.0f ms", l.waits[i].start.UTC().Format(stampFormat), ms(l.waits[i].wait)))
		}
	}
	r.Timeline = timeline(l.waits)
	for _, w := range l.dnsWaits {
		r.DNSMaxMS = max(r.DNSMaxMS, ms(w))
	}
	lc.mu.Lock()
	r.Long, r.LongSurvived, r.LongErrors = lc.n, lc.n-len(lc.errs), lc.errs
	lc.mu.Unlock()
	return r
}

// timeline groups waits by the quarter second they started in.
func timeline(waits []timedWait) []string {
	const bucket = 250 * time.Millisecond
	byStart := map[time.Time][]time.Duration{}
	for _, w := range waits {
		b := w.start.Truncate(bucket)
		byStart[b] = append(byStart[b], w.wait)
	}
	starts := slices.SortedFunc(maps.Keys(byStart), func(a, b time.Time) int { return a.Compare(b) })
	out := make([]string, 0, len(starts))
	for _, b := range starts {
		ws := byStart[b]
		slices.Sort(ws)
		out = append(out, fmt.Sprintf("%s n=%d p50=%.0fms max=%.0fms", b.UTC().Format("15:04:05.00"), len(ws), ms(ws[len(ws)/2]), ms(ws[len(ws)-1])))
	}
	return out
}

// stampFormat is the journal's time of day, to the microsecond.
const stampFormat = "15:04:05.000000"

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
