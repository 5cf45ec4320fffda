package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
	"github.com/meshwork/meshwork/bench/internal/histogram"
)

// result is one load run on one path.
type result struct {
	requests, errors int64
	rate             float64 // achieved requests per second
	hist             []histogram.Bucket
	use              map[string]usage // the sampled processes
	mach             machineUse
	loadCPU          float64 // the load generator's own CPU seconds
	cut              int64   // calls the load generator cut at its end, not counted
	firstError       string  // what the first failed request said, when known
}

// runTool runs a load generator on h, bounded by limit, and returns its
// standard output and the CPU seconds it used.
func runTool(ctx context.Context, h cpuhost.Host, limit time.Duration, bin string, args ...string) ([]byte, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	bin, args = h.Command(bin, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var cpu float64
	if ps := cmd.ProcessState; ps != nil {
		cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if err != nil {
		return stdout.Bytes(), cpu, fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, lastLines(stderr.String()+stdout.String(), 5))
	}
	return stdout.Bytes(), cpu, nil
}

// fortioReport is the part of fortio's JSON report used here.
type fortioReport struct {
	ActualQPS         float64
	RetCodes          map[string]int64
	DurationHistogram struct {
		Count int64
		Data  []histogram.Bucket
	}
}

// parseFortio reads fortio's JSON report; ok is the status that counts as
// success ("200" for HTTP, "SERVING" for a gRPC ping).
func parseFortio(raw []byte, ok string) (*result, error) {
	var r fortioReport
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("fortio json: %w", err)
	}
	if r.DurationHistogram.Count == 0 {
		return nil, errors.New("fortio json: no requests in the histogram")
	}
	res := &result{requests: r.DurationHistogram.Count, rate: r.ActualQPS, hist: r.DurationHistogram.Data}
	for code, n := range r.RetCodes {
		if code != ok {
			res.errors += n
		}
	}
	return res, nil
}

// jsonFile names a new file in dir for a load generator's JSON report.
func jsonFile(dir, prefix string) (string, error) {
	f, err := os.CreateTemp(dir, prefix+"-*.json")
	if err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// fortioHTTP runs fortio at -qps against url from h.
func fortioHTTP(ctx context.Context, h cpuhost.Host, fortio, dir, url string) (*result, error) {
	out, err := jsonFile(dir, "fortio")
	if err != nil {
		return nil, err
	}
	_, cpu, err := runTool(ctx, h, *duration+30*time.Second, fortio, "load",
		"-qps", strconv.Itoa(*qps), "-c", strconv.Itoa(*conns), "-t", duration.String(),
		// -r: 10 µs buckets. Fortio's default (1 ms) interpolates every
		// sub-millisecond percentile inside one bucket.
		"-r", "0.00001",
		// -uniform: the connections' requests spread evenly in time, a
		// steady 1,000 req/s rather than bursts of one per connection.
		"-uniform="+strconv.FormatBool(*uniform),
		"-p", "50,99,99.9", "-json", out, "-loglevel", "Warning", "-a=false", url)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	res, err := parseFortio(raw, "200")
	if err != nil {
		return nil, err
	}
	res.loadCPU = cpu
	return res, nil
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in `)
	wrkRate     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: ([0-9]+)`)
)

// parseWrk reads wrk's text report: requests, rate, and the socket errors
// and non-2xx answers as errors.
func parseWrk(out string) (*result, error) {
	n, r := wrkRequests.FindStringSubmatch(out), wrkRate.FindStringSubmatch(out)
	if n == nil || r == nil {
		return nil, fmt.Errorf("wrk: no request count or rate in %q", lastLines(out, 8))
	}
	res := &result{}
	res.requests, _ = strconv.ParseInt(n[1], 10, 64)
	res.rate, _ = strconv.ParseFloat(r[1], 64)
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, v := range m[1:] {
			e, _ := strconv.ParseInt(v, 10, 64)
			res.errors += e
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		e, _ := strconv.ParseInt(m[1], 10, 64)
		res.errors += e
	}
	return res, nil
}

// runWrk runs wrk (HTTP/1.1, keep-alive) as fast as it goes against url.
func runWrk(ctx context.Context, h cpuhost.Host, url string) (*result, error) {
	out, cpu, err := runTool(ctx, h, *wrkDuration+30*time.Second, "wrk",
		"-t", strconv.Itoa(*wrkThreads), "-c", strconv.Itoa(*wrkConns), "-d", wrkDuration.String(), "--timeout", "5s", url)
	if err != nil {
		return nil, err
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return nil, err
	}
	res.loadCPU = cpu
	return res, nil
}

// pingProto is fortio's ping service (fortio.org/fortio/fgrpc/ping.proto),
// which ghz needs to encode the calls.
const pingProto = `syntax = "proto3";
package fgrpc;
message PingMessage {
  int64 seq = 1;
  int64 ts = 2;
  string payload = 3;
  int64 delayNanos = 4;
}
service PingServer {
  rpc Ping (PingMessage) returns (PingMessage) {}
}
`

// ghzReport is the part of ghz's JSON report used here: every call's
// start, latency (ns) and outcome.
type ghzReport struct {
	Count   int64
	Rps     float64
	Details []ghzCall
}

type ghzCall struct {
	Timestamp time.Time
	Latency   int64
	Error     string
	Status    string
}

// cutByGhz reports a call that ghz itself cut when its run ended: ghz
// closes its connection (or cancels its context) at the end of -z, and a
// call still in flight then fails with that. Such calls started in the
// run's last second.
func cutByGhz(c ghzCall, last time.Time) bool {
	if c.Timestamp.Before(last.Add(-time.Second)) {
		return false
	}
	return c.Status == "Canceled" || strings.Contains(c.Error, "use of closed network connection") ||
		strings.Contains(c.Error, "grpc: the client connection is closing")
}

// parseGhz reads ghz's JSON report; each call is a bucket of its own, so
// that the percentiles are exact. Calls that ghz cut at the end of its
// run are left out; every other failure is an error.
func parseGhz(raw []byte) (*result, error) {
	var r ghzReport
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("ghz json: %w", err)
	}
	if len(r.Details) == 0 {
		return nil, errors.New("ghz json: no calls in details")
	}
	var last time.Time
	for _, d := range r.Details {
		if d.Timestamp.After(last) {
			last = d.Timestamp
		}
	}
	res := &result{rate: r.Rps}
	for _, d := range r.Details {
		switch {
		case d.Error == "" && d.Status == "OK":
			s := float64(d.Latency) / 1e9
			res.hist = append(res.hist, histogram.Bucket{Start: s, End: s, Count: 1})
		case cutByGhz(d, last):
			res.cut++
			continue
		default:
			res.errors++
			if res.firstError == "" {
				res.firstError = d.Status + ": " + d.Error
			}
		}
		res.requests++
	}
	return res, nil
}

// grpcPayload is the payload of every ping, each way.
var grpcPayload = strings.Repeat("x", appBodySize)

// runGhz makes unary gRPC calls at -grpc-rate for -grpc-duration against
// addr with ghz, on one HTTP/2 connection.
func runGhz(ctx context.Context, h cpuhost.Host, proto, addr string) (*result, error) {
	data, _ := json.Marshal(map[string]string{"payload": grpcPayload})
	out, cpu, err := runTool(ctx, h, *grpcDuration+30*time.Second, *ghzBin,
		"--insecure", "--proto", proto, "--call", "fgrpc.PingServer.Ping", "-d", string(data),
		"--rps", strconv.Itoa(*grpcRate), "-c", strconv.Itoa(*grpcConc), "--connections", "1",
		"-z", grpcDuration.String(), "--timeout", "5s", "-O", "json", addr)
	if err != nil {
		return nil, err
	}
	res, err := parseGhz(out)
	if err != nil {
		return nil, err
	}
	res.loadCPU = cpu
	return res, nil
}

// fortioGRPC is runGhz's stand-in when ghz is missing: fortio's gRPC ping
// load, histogram buckets of 10 µs.
func fortioGRPC(ctx context.Context, h cpuhost.Host, fortio, dir, addr string) (*result, error) {
	out, err := jsonFile(dir, "fortio")
	if err != nil {
		return nil, err
	}
	_, cpu, err := runTool(ctx, h, *grpcDuration+30*time.Second, fortio, "load", "-grpc", "-ping", "-payload", grpcPayload,
		"-qps", strconv.Itoa(*grpcRate), "-c", strconv.Itoa(*grpcConc), "-t", grpcDuration.String(), "-r", "0.00001",
		"-json", out, "-loglevel", "Warning", "-a=false", addr)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	res, err := parseFortio(raw, "SERVING")
	if err != nil {
		return nil, err
	}
	res.loadCPU = cpu
	return res, nil
}
