package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
)

const waitLimit = 10 * time.Second

// recorder collects a check's status changes on a channel.
type recorder struct {
	ch       chan Update
	timeouts atomic.Int32
}

func newRecorder() *recorder { return &recorder{ch: make(chan Update, 100)} }

func (r *recorder) deps(clk clock.Clock) Deps {
	return Deps{
		Clock:             clk,
		OnChange:          func(u Update) { r.ch <- u },
		OnCriticalTimeout: func(string) { r.timeouts.Add(1) },
	}
}

// next waits for the next status change.
func (r *recorder) next(t *testing.T) Update {
	t.Helper()
	select {
	case u := <-r.ch:
		return u
	case <-time.After(waitLimit):
		t.Fatal("no status change within the deadline")
		return Update{}
	}
}

// expect waits for the next change and checks its status.
func (r *recorder) expect(t *testing.T, want catalog.Health) Update {
	t.Helper()
	u := r.next(t)
	if u.Status != want {
		t.Fatalf("status changed to %s (%s), want %s", u.Status, u.Output, want)
	}
	return u
}

func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case u := <-r.ch:
		t.Fatalf("unexpected change to %s (%s)", u.Status, u.Output)
	default:
	}
}

func startCheck(t *testing.T, def api.CheckDefinition, deps Deps) *Check {
	t.Helper()
	if def.ID == "" {
		def.ID = "c1"
	}
	c, err := New(def, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ms(n int) api.Duration { return api.Duration(time.Duration(n) * time.Millisecond) }

func TestHTTPCheck(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	var mu sync.Mutex
	var gotMethod, gotHeader, gotHost string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotMethod, gotHeader, gotHost = r.Method, r.Header.Get("X-Probe"), r.Host
		mu.Unlock()
		w.WriteHeader(int(code.Load()))
		_, _ = w.Write([]byte("hello"))
	}))
	t.Cleanup(srv.Close)

	rec := newRecorder()
	c := startCheck(t, api.CheckDefinition{
		HTTP:     srv.URL + "/health",
		Method:   "POST",
		Header:   map[string][]string{"X-Probe": {"yes"}, "Host": {"web.local"}},
		Interval: ms(10),
	}, rec.deps(nil))

	u := rec.expect(t, catalog.Passing)
	if !strings.Contains(u.Output, "200 OK") || !strings.Contains(u.Output, "hello") {
		t.Fatalf("output = %q", u.Output)
	}
	mu.Lock()
	if gotMethod != "POST" || gotHeader != "yes" || gotHost != "web.local" {
		t.Fatalf("probe sent method %q, X-Probe %q, Host %q", gotMethod, gotHeader, gotHost)
	}
	mu.Unlock()

	code.Store(429)
	rec.expect(t, catalog.Warning)
	code.Store(503)
	u = rec.expect(t, catalog.Critical)
	if !strings.Contains(u.Output, "503") {
		t.Fatalf("output = %q", u.Output)
	}
	if st := c.State(); st.Status != catalog.Critical {
		t.Fatalf("State = %+v", st)
	}
	code.Store(204)
	rec.expect(t, catalog.Passing)

	if err := c.UpdateTTL(catalog.Passing, ""); !errors.Is(err, ErrNotTTL) {
		t.Fatalf("UpdateTTL on an http check: %v, want ErrNotTTL", err)
	}
}

func TestHTTPCheckTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	rec := newRecorder()
	startCheck(t, api.CheckDefinition{
		HTTP: srv.URL, Interval: ms(10), Timeout: ms(50), Status: "passing",
	}, rec.deps(nil))
	u := rec.expect(t, catalog.Critical)
	if !strings.Contains(u.Output, "timed out after 50ms") {
		t.Fatalf("output = %q", u.Output)
	}
}

func TestHTTPCheckUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rec := newRecorder()
	c := startCheck(t, api.CheckDefinition{HTTP: "http://" + addr + "/", Interval: ms(10), Status: "passing"}, rec.deps(nil))
	u := rec.expect(t, catalog.Critical)
	if !strings.Contains(u.Output, "connection refused") {
		t.Fatalf("output = %q", u.Output)
	}
	if c.Kind() != api.CheckHTTP || c.Definition().Method != "GET" {
		t.Fatalf("kind %q, method %q", c.Kind(), c.Definition().Method)
	}
}

// TestHTTPCheckInterval drives the interval with a manual clock: one probe
// at start, then one each time the clock passes the interval.
func TestHTTPCheckInterval(t *testing.T) {
	hits := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits <- struct{}{} }))
	t.Cleanup(srv.Close)
	clock := clock.NewManual(time.Unix(1000, 0))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	startCheck(t, api.CheckDefinition{HTTP: srv.URL, Interval: api.Duration(time.Minute)}, Deps{Clock: clock})
	waitHit := func() {
		t.Helper()
		select {
		case <-hits:
		case <-ctx.Done():
			t.Fatal("no probe")
		}
	}
	waitHit()
	for i := 0; i < 3; i++ {
		if err := clock.WaitPending(ctx, 1); err != nil {
			t.Fatal("the loop never armed its interval timer")
		}
		clock.Advance(time.Minute - time.Second)
		if len(hits) != 0 || clock.Pending() != 1 {
			t.Fatal("probed before the interval passed")
		}
		clock.Advance(time.Second)
		waitHit()
	}
}

func TestTCPCheck(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	rec := newRecorder()
	startCheck(t, api.CheckDefinition{TCP: l.Addr().String(), Interval: ms(10)}, rec.deps(nil))
	rec.expect(t, catalog.Passing)
	l.Close()
	u := rec.expect(t, catalog.Critical)
	if !strings.Contains(u.Output, "connection refused") {
		t.Fatalf("output = %q", u.Output)
	}
}

func TestTTLCheck(t *testing.T) {
	clock := clock.NewManual(time.Unix(1000, 0))
	rec := newRecorder()
	c := startCheck(t, api.CheckDefinition{TTL: api.Duration(10 * time.Second)}, rec.deps(clock))
	if st := c.State(); st.Status != catalog.Critical {
		t.Fatalf("initial status %s, want critical", st.Status)
	}
	if err := c.UpdateTTL(catalog.Passing, "all good"); err != nil {
		t.Fatal(err)
	}
	if u := rec.expect(t, catalog.Passing); u.Output != "all good" {
		t.Fatalf("output %q", u.Output)
	}
	clock.Advance(9 * time.Second)
	rec.none(t)
	// An update restarts the countdown.
	if err := c.UpdateTTL(catalog.Passing, "still good"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(9 * time.Second)
	rec.none(t)
	if c.State().Output != "still good" {
		t.Fatalf("output %q", c.State().Output)
	}
	clock.Advance(time.Second)
	u := rec.expect(t, catalog.Critical)
	if !strings.Contains(u.Output, "TTL of 10s expired") {
		t.Fatalf("output %q", u.Output)
	}
	if err := c.UpdateTTL(catalog.Warning, "meh"); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, catalog.Warning)
	if err := c.UpdateTTL("fine", ""); !errors.Is(err, ErrBadStatus) {
		t.Fatalf("bad status: %v", err)
	}
	c.Close()
	c.Close()
	if err := c.UpdateTTL(catalog.Passing, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	clock.Advance(time.Hour)
	rec.none(t)
}

func TestDeregisterCriticalAfter(t *testing.T) {
	clock := clock.NewManual(time.Unix(1000, 0))
	rec := newRecorder()
	c := startCheck(t, api.CheckDefinition{
		TTL: api.Duration(10 * time.Second), Status: "passing",
		DeregisterCriticalAfter: api.Duration(30 * time.Second),
	}, rec.deps(clock))

	clock.Advance(10 * time.Second) // TTL expires
	rec.expect(t, catalog.Critical)
	clock.Advance(29 * time.Second)
	if n := rec.timeouts.Load(); n != 0 {
		t.Fatalf("timed out after 29s of 30s")
	}
	// A recovery resets the count.
	if err := c.UpdateTTL(catalog.Passing, ""); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, catalog.Passing)
	clock.Advance(10 * time.Second)
	rec.expect(t, catalog.Critical)
	clock.Advance(29 * time.Second)
	if n := rec.timeouts.Load(); n != 0 {
		t.Fatalf("the critical spell before the recovery was counted")
	}
	clock.Advance(time.Second)
	if n := rec.timeouts.Load(); n != 1 {
		t.Fatalf("OnCriticalTimeout called %d times, want 1", n)
	}
	clock.Advance(time.Hour)
	if n := rec.timeouts.Load(); n != 1 {
		t.Fatalf("OnCriticalTimeout called %d times in one spell, want 1", n)
	}
}

func TestNewRefusesBadDefinitions(t *testing.T) {
	tests := []struct {
		name string
		def  api.CheckDefinition
		want string
	}{
		{"no id", api.CheckDefinition{TTL: api.Duration(time.Second)}, "id is empty"},
		{"no kind", api.CheckDefinition{ID: "x"}, "exactly one of"},
		{"no interval", api.CheckDefinition{ID: "x", TCP: "a:1"}, `check x.interval: "0s" must be > 0`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.def, Deps{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	rec := newRecorder()
	d := rec.deps(nil)
	d.Metrics = m
	startCheck(t, api.CheckDefinition{HTTP: srv.URL, Interval: ms(10)}, d)
	rec.expect(t, catalog.Passing)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{MetricProbes, MetricProbeDuration, MetricChanges} {
		if !got[name] {
			t.Errorf("metric %s is missing; have %v", name, got)
		}
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering twice must fail")
	}
}

// A resumed check starts from its predecessor's status, and its first
// probe corrects it; once started it can no longer be resumed.
func TestResume(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: the first probe fails
	rec := newRecorder()
	c, err := New(api.CheckDefinition{ID: "c1", TCP: addr, Interval: ms(10)}, rec.deps(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Resume(catalog.Passing, "as before")
	if st := c.State(); st.Status != catalog.Passing || st.Output != "as before" {
		t.Fatalf("resumed state = %+v", st)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, catalog.Critical)
	c.Resume(catalog.Passing, "too late")
	if st := c.State(); st.Status != catalog.Critical {
		t.Fatalf("a started check was resumed: %+v", st)
	}
}
