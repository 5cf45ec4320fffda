package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// newClient is the application: a Go net/http client holding at most conns
// keep-alive HTTP/1.1 connections.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxConnsPerHost:     conns,
			MaxIdleConnsPerHost: conns,
			DisableCompression:  true,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}

// requestBody is the 1 KiB every load request sends.
var requestBody = bytes.Repeat([]byte("meshwork"), bodySize/8)

// errAnswer is a wrong answer: status or body size.
var errAnswer = errors.New("wrong answer")

// call sends one 1 KiB POST to url and checks the status and body size.
func call(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(requestBody))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	bp := bufPool.Get().(*[]byte)
	n, err := io.ReadFull(resp.Body, (*bp)[:bodySize+1])
	bufPool.Put(bp)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != bodySize {
		return fmt.Errorf("%w: status %d, %d bytes", errAnswer, resp.StatusCode, n)
	}
	return nil
}

// usage is the process's CPU time and allocations at one moment.
type usage struct {
	cpu     time.Duration
	mallocs uint64
	bytes   uint64
}

func readUsage() usage {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{
		cpu:     time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		mallocs: ms.Mallocs,
		bytes:   ms.TotalAlloc,
	}
}

// cost is what a phase cost the process per request.
type cost struct {
	cpuPerK      float64 // CPU seconds per 1,000 requests
	allocsPerReq float64
	bytesPerReq  float64
	n            int // requests pooled, for add
}

// add pools c, over n requests, into the cost of the m requests so far.
func (c cost) add(d cost, n int) cost {
	c.n += n
	if c.n == 0 {
		return c
	}
	w := float64(n) / float64(c.n)
	c.cpuPerK += (d.cpuPerK - c.cpuPerK) * w
	c.allocsPerReq += (d.allocsPerReq - c.allocsPerReq) * w
	c.bytesPerReq += (d.bytesPerReq - c.bytesPerReq) * w
	return c
}

func costSince(before usage, requests int) cost {
	after := readUsage()
	if requests == 0 {
		return cost{}
	}
	n := float64(requests)
	return cost{
		cpuPerK:      (after.cpu - before.cpu).Seconds() * 1000 / n,
		allocsPerReq: float64(after.mallocs-before.mallocs) / n,
		bytesPerReq:  float64(after.bytes-before.bytes) / n,
	}
}

// latencies is a phase's request latencies, sorted.
type latencies struct {
	d      []time.Duration
	errors int
	first  error
}

// merge pools m into l (either may be nil) and keeps the result sorted.
func (l *latencies) merge(m *latencies) *latencies {
	if l == nil {
		return m
	}
	out := &latencies{d: append(slices.Clone(l.d), m.d...), errors: l.errors + m.errors, first: l.first}
	if out.first == nil {
		out.first = m.first
	}
	slices.Sort(out.d)
	return out
}

func (l *latencies) quantile(q float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	i := int(q*float64(len(l.d))+0.5) - 1
	return l.d[max(0, min(i, len(l.d)-1))]
}

// fixedRate sends rate requests per second to url for d, spread evenly
// over conns workers (one keep-alive connection each), and returns their
// latencies. A request's latency is counted from the moment it was due,
// not from when a busy worker got to it, so that a stall is not hidden
// (coordinated omission).
func fixedRate(ctx context.Context, c *http.Client, url string, rate float64, d time.Duration, conns int) *latencies {
	total := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	lat := make([]time.Duration, total)
	failed := make([]bool, total)
	var firstErr atomic.Pointer[error]
	start := time.Now().Add(20 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for k := w; k < total; k += conns {
				due := start.Add(time.Duration(k) * interval)
				// A schedule, not a wait for an event: the load is open-loop.
				time.Sleep(time.Until(due))
				if ctx.Err() != nil {
					failed[k] = true
					continue
				}
				if err := call(ctx, c, url); err != nil {
					failed[k] = true
					firstErr.CompareAndSwap(nil, &err)
				}
				lat[k] = time.Since(due)
			}
		})
	}
	wg.Wait()
	l := &latencies{d: make([]time.Duration, 0, total)}
	for k, f := range failed {
		if f {
			l.errors++
			continue
		}
		l.d = append(l.d, lat[k])
	}
	if p := firstErr.Load(); p != nil {
		l.first = *p
	}
	slices.Sort(l.d)
	return l
}

// maxRate runs workers closed-loop workers against url for d (at most
// limit requests) and returns the requests that succeeded and failed.
func maxRate(ctx context.Context, c *http.Client, url string, workers int, d time.Duration, limit int64) (ok, failed int64, first error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var sent, okN, failN atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && sent.Add(1) <= limit {
				if err := call(ctx, c, url); err != nil {
					if ctx.Err() != nil {
						return // cut by the end of the phase
					}
					failN.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				okN.Add(1)
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		first = *p
	}
	return okN.Load(), failN.Load(), first
}

// holResult is the head-of-line check of one path: fast requests while
// slow ones are in flight on the same hops.
type holResult struct {
	fast    *latencies
	slowN   int
	slowP50 time.Duration
	slowErr int
}

// headOfLine sends fast requests at rate for d while one client
// connection sends slow requests (the app sleeps slowDelay) back to back,
// all through the same hops and so the same QUIC connection.
func headOfLine(ctx context.Context, c *http.Client, base string, rate float64, d time.Duration, conns int) holResult {
	slow := newClient(1)
	defer slow.CloseIdleConnections()
	sctx, stop := context.WithCancel(ctx)
	var slowLat []time.Duration
	var slowErr int
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Bounded by the phase: at most d/slowDelay+2 requests.
		for range int(d/slowDelay) + 2 {
			if sctx.Err() != nil {
				return
			}
			t0 := time.Now()
			if err := call(sctx, slow, base+slowPath); err != nil {
				if sctx.Err() == nil {
					slowErr++
				}
				continue
			}
			slowLat = append(slowLat, time.Since(t0))
		}
	}()
	fast := fixedRate(ctx, c, base+echoPath, rate, d, conns)
	stop()
	<-done
	slices.Sort(slowLat)
	r := holResult{fast: fast, slowN: len(slowLat), slowErr: slowErr}
	if len(slowLat) > 0 {
		r.slowP50 = slowLat[len(slowLat)/2]
	}
	return r
}
