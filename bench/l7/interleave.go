package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
)

// The interleaved load compares paths whose difference is far below the
// round-to-round noise of this machine: rather than one path after the
// other, every path gets a request at each tick of one schedule, all at
// once, so that a noisy spell of the machine lands on all of them alike. Its percentiles
// are exact, from every request's latency.

// interleaveBlock is the length of a block: the report pairs the paths'
// percentiles block by block too, to show how much they move.
const interleaveBlock = 10 * time.Second

// maxInFlight bounds the requests of one path in flight at once: past it
// the schedule's request is counted as failed rather than queued, so that
// a stalled path cannot pile up goroutines.
const maxInFlight = 256

// pathLatencies is what the interleaved load measured on one path.
type pathLatencies struct {
	Micros     []int32 `json:"micros"` // each request's latency, µs, in order sent
	Blocks     []int32 `json:"blocks"` // the block each request was sent in
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
}

// runInterleave is the load generator's process (-role interleave): it
// sends GET requests at rate per second in total to the targets, given as
// "name=url,name=url", each target getting one request per tick, for d;
// and prints
// a JSON object of pathLatencies by name.
func runInterleave(targets string, rate int, d time.Duration, conns int) error {
	names, urls, err := parseTargets(targets)
	if err != nil {
		return err
	}
	if rate < 1 || d <= 0 {
		return fmt.Errorf("interleave: rate %d and duration %s must be positive", rate, d)
	}
	clients := make([]*http.Client, len(urls))
	for i := range clients {
		clients[i] = &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{
				MaxIdleConnsPerHost: conns,
				MaxConnsPerHost:     conns,
				DisableCompression:  true,
			},
		}
	}
	lat := make([]pathLatencies, len(urls))
	var mu sync.Mutex // guards lat
	slots := make([]chan struct{}, len(urls))
	for i := range slots {
		slots[i] = make(chan struct{}, maxInFlight)
	}
	fail := func(i int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if lat[i].Errors == 0 {
			lat[i].FirstError = err.Error()
		}
		lat[i].Errors++
	}

	var wg sync.WaitGroup
	send := func(i int, block int32) {
		select {
		case slots[i] <- struct{}{}:
		default:
			fail(i, fmt.Errorf("more than %d requests in flight", maxInFlight))
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots[i] }()
			t0 := time.Now()
			err := get(clients[i], urls[i])
			took := time.Since(t0)
			if err != nil {
				fail(i, err)
				return
			}
			mu.Lock()
			lat[i].Micros = append(lat[i].Micros, int32(took.Microseconds()))
			lat[i].Blocks = append(lat[i].Blocks, block)
			mu.Unlock()
		}()
	}
	// Every tick sends one request to each path at once, in an order drawn
	// anew each tick: no path always follows another.
	interval := time.Second * time.Duration(len(urls)) / time.Duration(rate)
	order := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	for k := range int(d / interval) {
		at := start.Add(time.Duration(k) * interval)
		time.Sleep(time.Until(at)) // pacing the open-loop schedule
		block := int32(time.Duration(k) * interval / interleaveBlock)
		for _, i := range order.Perm(len(urls)) {
			send(i, block)
		}
	}
	wg.Wait()
	out := make(map[string]pathLatencies, len(names))
	for i, name := range names {
		out[name] = lat[i]
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// get sends one GET and reads its answer, which must be a 200.
func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// parseTargets reads "name=url,name=url".
func parseTargets(s string) (names, urls []string, err error) {
	for _, t := range strings.Split(s, ",") {
		name, url, ok := strings.Cut(t, "=")
		if !ok || name == "" || url == "" {
			return nil, nil, fmt.Errorf("interleave: target %q is not name=url", t)
		}
		names, urls = append(names, name), append(urls, url)
	}
	return names, urls, nil
}

// interleaveLoad runs the interleaved load generator on h against the
// targets (path -> address), at rate requests per second in total.
func interleaveLoad(ctx context.Context, h cpuhost.Host, targets map[string]string, paths []string, rate int, d time.Duration) (map[string]pathLatencies, float64, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, 0, err
	}
	var list []string
	for _, p := range paths {
		list = append(list, p+"=http://"+targets[p]+"/")
	}
	out, cpu, err := runTool(ctx, h, d+time.Minute, self, "-role", "interleave",
		"-targets", strings.Join(list, ","), "-qps", strconv.Itoa(rate), "-duration", d.String(), "-c", strconv.Itoa(*conns))
	if err != nil {
		return nil, 0, err
	}
	var lat map[string]pathLatencies
	if err := json.Unmarshal(out, &lat); err != nil {
		return nil, 0, fmt.Errorf("interleave: its report: %w", err)
	}
	for _, p := range paths {
		if len(lat[p].Micros) == 0 {
			return nil, 0, fmt.Errorf("interleave: no request measured on the %s path", p)
		}
	}
	return lat, cpu, nil
}

// percentile is the q-th percentile of µs latencies, nearest rank.
func percentile(micros []int32, q float64) time.Duration {
	if len(micros) == 0 {
		return 0
	}
	s := slices.Clone(micros)
	slices.Sort(s)
	i := int(q / 100 * float64(len(s)))
	i = min(max(i, 0), len(s)-1)
	return time.Duration(s[i]) * time.Microsecond
}

// byBlock splits a path's latencies by block.
func byBlock(l pathLatencies) [][]int32 {
	var blocks [][]int32
	for j, us := range l.Micros {
		b := int(l.Blocks[j])
		for len(blocks) <= b {
			blocks = append(blocks, nil)
		}
		blocks[b] = append(blocks[b], us)
	}
	return blocks
}

// blockDiffs is, block by block, the percentile q of a minus that of b:
// sorted, for the median and the spread.
func blockDiffs(a, b pathLatencies, q float64) []time.Duration {
	ba, bb := byBlock(a), byBlock(b)
	var d []time.Duration
	for i := range min(len(ba), len(bb)) {
		if len(ba[i]) == 0 || len(bb[i]) == 0 {
			continue
		}
		d = append(d, percentile(ba[i], q)-percentile(bb[i], q))
	}
	slices.Sort(d)
	return d
}

// halves splits a path's latencies into two by request order, the even
// and the odd: two samples of one path under the same conditions, whose
// difference is the sampling noise of a percentile over this many
// requests.
func halves(l pathLatencies) (even, odd []int32) {
	for j, us := range l.Micros {
		if j%2 == 0 {
			even = append(even, us)
		} else {
			odd = append(odd, us)
		}
	}
	return even, odd
}

var errNoBlocks = errors.New("no block")

// quartiles of sorted durations: the lower, the median and the upper.
func quartiles(d []time.Duration) (q1, med, q3 time.Duration, err error) {
	if len(d) == 0 {
		return 0, 0, 0, errNoBlocks
	}
	return d[len(d)/4], d[len(d)/2], d[len(d)*3/4], nil
}
