package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
	"github.com/meshwork/meshwork/bench/internal/histogram"
	"github.com/meshwork/meshwork/internal/freeport"
)

// haproxyPair starts the HAProxy pair in front of an app of appHandler, the
// client end trusting clientTrust's certificate (its own, when empty), and
// returns the pair's front address.
func haproxyPair(t *testing.T, clientTrust string) string {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy is missing: scripts/deps.sh bench")
	}
	app := httptest.NewServer(appHandler())
	t.Cleanup(app.Close)
	dir := t.TempDir()
	certFile, pairFile, err := writeHAProxyCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ports [2]int
	for i := range ports {
		if ports[i], err = freeport.TCP("127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	c := haproxyConfig{threads: 1, front: addr(ports[0]), between: addr(ports[1]),
		app: strings.TrimPrefix(app.URL, "http://"), certFile: certFile, pairFile: pairFile}
	for name, conf := range map[string]string{"client": c.client(), "server": c.server()} {
		f := filepath.Join(dir, "check-"+name+".cfg")
		if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("haproxy", "-c", "-f", f).CombinedOutput(); err != nil {
			t.Fatalf("haproxy -c rejects the %s end's config: %v\n%s\n%s", name, err, out, conf)
		}
	}
	if clientTrust != "" {
		// The client end trusts another certificate than the server end's.
		c.certFile = clientTrust
	}
	procs := &procSet{}
	t.Cleanup(procs.stopAll)
	if _, _, err := startHAProxy(procs, cpuhost.Host{Name: "A"}, cpuhost.Host{Name: "B"}, dir, c); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, a := range []string{c.front, c.between} {
		if err := waitTCP(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	return c.front
}

// TestHAProxyPairCarriesHTTP runs the pair's configs in real HAProxy
// processes: they pass `haproxy -c`, and a request through the pair gets
// the app's 1 KiB answer over one kept-alive connection after another.
func TestHAProxyPairCarriesHTTP(t *testing.T) {
	front := haproxyPair(t, "")
	for i := range 3 {
		if err := getBody(context.Background(), front); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
}

// TestHAProxyPairVerifiesTLS: a client end that does not trust the server
// end's certificate gets no answer from the app, so the TLS between the
// two is verified and not merely encrypted.
func TestHAProxyPairVerifiesTLS(t *testing.T) {
	other, _, err := writeHAProxyCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	front := haproxyPair(t, other)
	resp, err := http.Get("http://" + front + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("through an untrusted server end: %s, want 503 from the client end", resp.Status)
	}
}

func TestPercentile(t *testing.T) {
	exact := func(ms ...float64) []histogram.Bucket {
		var bs []histogram.Bucket
		for _, m := range ms {
			bs = append(bs, histogram.Bucket{Start: m / 1000, End: m / 1000, Count: 1})
		}
		return bs
	}
	for _, tc := range []struct {
		name string
		bs   []histogram.Bucket
		q    float64
		want time.Duration
	}{
		{"exact median", exact(3, 1, 2), 50, 2 * time.Millisecond},
		{"exact p99 of 100 is the 99th", exact(seq(100)...), 99, 99 * time.Millisecond},
		{"exact p99.9 of 100 is the largest", exact(seq(100)...), 99.9, 100 * time.Millisecond},
		{"inside a bucket, linearly", []histogram.Bucket{{Start: 0, End: 0.001, Count: 10}, {Start: 0.001, End: 0.002, Count: 10}}, 75, 1500 * time.Microsecond},
		{"empty", nil, 99, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := histogram.Percentile(tc.bs, tc.q); got != tc.want {
				t.Fatalf("p%g = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func seq(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(i + 1)
	}
	return s
}

func TestPairedAddedIsTheMedianRound(t *testing.T) {
	one := func(ms float64) *result {
		return &result{hist: []histogram.Bucket{{Start: ms / 1000, End: ms / 1000, Count: 1}}}
	}
	path := []*result{one(5), one(1.5), one(1.2)}
	base := []*result{one(1), one(1), one(1)}
	// Rounds add 4, 0.5 and 0.2 ms: the median is 0.5, whatever the
	// noisy first round did.
	if got := pairedAdded(path, base, 99); got != 500*time.Microsecond {
		t.Fatalf("paired added = %v, want 500µs", got)
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 10s test @ http://127.0.0.1:8080/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   580.12us  201.33us   9.87ms   90.01%
    Req/Sec    13.50k     1.02k   15.20k    70.00%
  268512 requests in 10.00s, 306.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  26848.51
Transfer/sec:     30.61MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.requests != 268512 || r.rate != 26848.51 || r.errors != 7 {
		t.Fatalf("got requests %d, rate %g, errors %d; want 268512, 26848.51, 7", r.requests, r.rate, r.errors)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil {
		t.Fatal("a report without figures parsed")
	}
}

func TestParseGhz(t *testing.T) {
	closed := "rpc error: code = Unavailable desc = error reading from server: read tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection"
	raw := `{"count":5,"rps":999.5,"details":[
		{"timestamp":"2026-12-07T06:00:00Z","latency":400000,"error":"","status":"OK"},
		{"timestamp":"2026-12-07T06:00:01Z","latency":300000,"error":"","status":"OK"},
		{"timestamp":"2026-12-07T06:00:02Z","latency":9000000,"error":"rpc error: code = Unavailable","status":"Unavailable"},
		{"timestamp":"2026-12-07T06:00:03Z","latency":8000000,"error":"` + closed + `","status":"Unavailable"},
		{"timestamp":"2026-12-07T06:00:10Z","latency":8000000,"error":"` + closed + `","status":"Unavailable"}]}`
	r, err := parseGhz([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	// The last call was cut by ghz's end; the one of the same kind 7 s
	// earlier was not.
	if r.requests != 4 || r.errors != 2 || r.cut != 1 || r.rate != 999.5 {
		t.Fatalf("got requests %d, errors %d, cut %d, rate %g; want 4, 2, 1, 999.5", r.requests, r.errors, r.cut, r.rate)
	}
	// The failed call is not a latency.
	if got := histogram.Percentile(r.hist, 100); got != 400*time.Microsecond {
		t.Fatalf("p100 = %v, want 400µs", got)
	}
	if _, err := parseGhz([]byte(`{"count":0}`)); err == nil {
		t.Fatal("a report without calls parsed")
	}
}

func TestParseFortio(t *testing.T) {
	raw := `{"ActualQPS":998.7,"RetCodes":{"200":9,"503":1},
		"DurationHistogram":{"Count":10,"Data":[{"Start":0.0001,"End":0.0002,"Count":10}]}}`
	r, err := parseFortio([]byte(raw), "200")
	if err != nil {
		t.Fatal(err)
	}
	if r.requests != 10 || r.errors != 1 || r.rate != 998.7 || len(r.hist) != 1 {
		t.Fatalf("got %+v", r)
	}
	if _, err := parseFortio([]byte(`{"DurationHistogram":{"Count":0}}`), "200"); err == nil {
		t.Fatal("a report without requests parsed")
	}
}

func TestParseStatTicks(t *testing.T) {
	// A command name with a space and a ')' of its own.
	line := "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 4 0 100 0 0"
	got, err := parseStatTicks(line)
	if err != nil || got != 175 {
		t.Fatalf("got %d, %v; want 175", got, err)
	}
	if _, err := parseStatTicks("4242 (x) S 1"); err == nil {
		t.Fatal("a short line parsed")
	}
}

func TestParseCPUStat(t *testing.T) {
	s := parseCPUStat("cpu  100 5 50 1000 20 3 2 7 0 0")
	if s.busy != 160 || s.steal != 7 {
		t.Fatalf("got busy %d steal %d, want 160 and 7", s.busy, s.steal)
	}
}

func TestMetricSum(t *testing.T) {
	body := "# HELP x y\n# TYPE x counter\nmeshwork_transport_inbound_streams_total 12\nmeshwork_transport_inbound_streams_total_other 5\nother{a=\"b\"} 1\n"
	if got, err := metricSum(body, "meshwork_transport_inbound_streams_total"); err != nil || got != 12 {
		t.Fatalf("got %g, %v; want 12", got, err)
	}
	if got, err := metricSum("m{k=\"1\"} 2\nm{k=\"2\"} 3\n", "m"); err != nil || got != 5 {
		t.Fatalf("labelled samples: got %g, %v; want 5", got, err)
	}
	if _, err := metricSum(body, "missing"); err == nil {
		t.Fatal("a missing metric was found")
	}
}

func TestRotate(t *testing.T) {
	p := []string{"a", "b", "c"}
	for r, want := range [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}} {
		if got := rotate(p, r); !slices.Equal(got, want) {
			t.Fatalf("round %d: %v, want %v", r, got, want)
		}
	}
	if !slices.Equal(p, []string{"a", "b", "c"}) {
		t.Fatal("rotate changed its input")
	}
}

// TestAppAnswersOneKiB: the app's answer is what every path is checked
// against.
func TestAppAnswersOneKiB(t *testing.T) {
	app := httptest.NewServer(appHandler())
	defer app.Close()
	if err := getBody(context.Background(), strings.TrimPrefix(app.URL, "http://")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Something that is not the app fails the check.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "short") })}
	go srv.Serve(ln)
	defer srv.Close()
	if err := getBody(context.Background(), ln.Addr().String()); err == nil {
		t.Fatal("a 5-byte answer passed the check")
	}
}
