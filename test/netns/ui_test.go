//go:build e2e

package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/meshwork/meshwork/acl"
)

// The web UI of issue 32, in a real headless Chromium (the Debian
// package, driven by chromedp) against the real binary:
//
//	h1  server (bootstrap_expect 1), service web (the test's app)
//	h2  service shop, with an upstream to web, which the test loads
//	h3  client agent; a service is registered on it during the test
//
// Every agent's telemetry listener is on its host's address, so the UI on
// h1 (the agents provider) asks each of them for its counters. Chromium
// runs in the test's own namespace and reaches h1's API, on h1's
// loopback, through a forwarder the test runs (uiForward). TestUIPrometheus
// runs the topology part again with a real Prometheus on h1 as the
// source (ui.metrics_provider prometheus); TestUIACL has a one-host
// cluster with ACLs on, for the token prompt.
//
// Screenshots of every page go to $MESHWORK_ARTIFACTS/<test>, else to a
// directory under the test's temp dir, named in the log. Any console
// error, uncaught exception or browser log error fails the test.

const (
	uiWebPort    = 8081
	uiUpstream   = "127.0.0.1:9081"
	uiTelemetry  = "9102"
	uiAPI        = "127.0.0.1:8500" // the agent's default API address
	uiLoadRate   = 40               // requests a second from shop to web
	uiLoadCalls  = 2400             // bounds the load (60 s at uiLoadRate, under l7CallBound)
	uiAppearing  = 5 * time.Second  // a registered service shows up within this
	uiEdgeWithin = 30 * time.Second // an edge, and its colour change, show up within this
	uiChromium   = "/usr/bin/chromium"
)

var uiPages = []string{"topology", "nodes", "services", "intentions", "policy", "ca"}

const uiPolicy = `kind: IntentionDefaults
name: default
action: allow
---
kind: Intention
name: web
sources:
  - name: shop
    action: allow
  - name: "*"
    action: deny
---
kind: ServiceDefaults
name: web
protocol: http
`

// uiFault makes web fail half of its requests (docs/policy.md, Fault).
const uiFault = `kind: Fault
name: web
abort:
  percent: 50
  http_status: 503
`

func TestUI(t *testing.T) {
	if _, err := os.Stat(uiChromium); err != nil {
		t.Fatal("chromium is not installed: run scripts/deps.sh e2e (Debian package chromium)")
	}
	artifacts := uiArtifacts(t)
	m := startUIMesh(t, "")
	h1, h3 := m.nw.Hosts[0], m.nw.Hosts[2]

	base := uiForward(t, h1, uiAPI)
	b := newUIBrowser(t, artifacts)

	// Load time: from navigation to the topology page drawn with data.
	start := time.Now()
	b.run(chromedp.Navigate(base+"/ui/#/topology"), chromedp.WaitVisible(`body[data-ready="topology"] svg.graph`))
	loaded := time.Since(start)
	navMS := uiEval[float64](b, `(() => { const n = performance.getEntriesByType("navigation")[0]; return n.loadEventEnd - n.startTime; })()`)
	t.Logf("ui load on loopback: %s to the topology page drawn with its data; navigation to load event %.0f ms", loaded.Round(time.Millisecond), navMS)

	// Every page loads, with its data, at desktop and at phone width.
	for _, p := range uiPages {
		b.page(base, p)
		b.screenshot("page-" + p)
	}
	// At phone width every page fits the screen: wide tables scroll in
	// their own box, the page does not.
	b.run(chromedp.EmulateViewport(390, 844))
	for _, p := range uiPages {
		b.page(base, p)
		if w := uiEval[int](b, `document.documentElement.scrollWidth - window.innerWidth`); w > 0 {
			t.Errorf("%s at 390 px wide: the page is %d px wider than the screen", p, w)
		}
		b.screenshot("phone-" + p)
	}
	b.run(chromedp.EmulateViewport(1280, 800))

	// The keyboard alone moves between pages: Tab from the skip link to
	// the navigation, Enter on a link.
	b.page(base, "topology")
	b.run(chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab))
	if got := uiEval[string](b, `document.activeElement.dataset.page || document.activeElement.tagName`); got != "nodes" {
		t.Errorf("the third Tab reached %q, want the Nodes link", got)
	}
	b.run(chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(`body[data-ready="nodes"] tr[data-node]`))
	b.page(base, "nodes")
	for _, n := range []string{"h1", "h2", "h3"} {
		b.run(chromedp.WaitVisible(fmt.Sprintf(`tr[data-node=%q]`, n)))
	}
	b.page(base, "policy")
	b.run(chromedp.WaitVisible(`details[data-doc="Intention/web"] pre`))
	b.page(base, "intentions")
	cell := b.text(`td[data-src="shop"][data-dst="web"]`)
	if !strings.HasPrefix(cell, "allow") || !strings.Contains(cell, "Intention web, source shop") {
		t.Errorf("intentions: shop → web reads %q, want allow by Intention web, source shop", cell)
	}

	// A service registered on h3 during the test appears within 5 s on
	// the services page open at h1, which watches the catalog.
	b.page(base, "services")
	h3api := hostClient(h3, 1)
	t.Cleanup(h3api.CloseIdleConnections)
	req, _ := http.NewRequest(http.MethodPut, "http://"+uiAPI+"/v1/agent/service/register", strings.NewReader(`{"name": "late", "port": 9300, "tags": ["new"]}`))
	resp, err := h3api.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register late on h3: %s", resp.Status)
	}
	registered := time.Now()
	b.waitFor(uiAppearing, `section[data-service="late"]`)
	t.Logf("service late appeared on the services page %s after its registration", time.Since(registered).Round(time.Millisecond))

	// Under load, the edge shop → web appears, healthy; a Fault makes it red.
	m.edgeTurnsRed(b, base, "")
	sources := uiEval[int](b, `document.querySelectorAll("ul.sources li .ok").length`)
	if sources != 3 {
		t.Errorf("the topology read %d agents, want 3 (each agent asked for its counters)", sources)
	}
	b.checkConsole()
}

// TestUIPrometheus: the topology's numbers from a real Prometheus
// (ui.metrics_provider prometheus) scraping the agents' telemetry
// listeners, the Debian package as in TestPrometheusGoldenSignals.
func TestUIPrometheus(t *testing.T) {
	if _, err := os.Stat(uiChromium); err != nil {
		t.Fatal("chromium is not installed: run scripts/deps.sh e2e (Debian package chromium)")
	}
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run scripts/deps.sh test (Debian package prometheus)")
	}
	artifacts := uiArtifacts(t)
	m := startUIMesh(t, fmt.Sprintf("ui:\n  metrics_provider: prometheus\n  prometheus_url: http://%s\n", sigPromAddr))
	h1 := m.nw.Hosts[0]
	var addrs []string
	for _, h := range m.nw.Hosts {
		addrs = append(addrs, h.Addr)
	}
	startPrometheus(t, h1, prom, addrs)
	base := uiForward(t, h1, uiAPI)
	b := newUIBrowser(t, artifacts)
	m.edgeTurnsRed(b, base, "prometheus-")
	if got := b.textContent("ul.sources"); !strings.Contains(got, "http://"+sigPromAddr+"/api/v1/query") {
		t.Errorf("the page names its source %q, want the Prometheus API", got)
	}
	b.page(base, "nodes")
	if v := b.textContent(`tr[data-node="h2"]`); !strings.Contains(v, "in 2") { // the leaf's expiry, "in 24 h" or "in 23 h"
		t.Errorf("h2's row %q shows no certificate expiry from Prometheus", v)
	}
	b.checkConsole()
}

// uiMesh is the three agents of the UI tests, the web app and shop's
// client.
type uiMesh struct {
	t      *testing.T
	nw     *Net
	agents []*Agent
	shop   *http.Client
}

// startUIMesh starts the mesh of the UI tests; h1Extra goes into h1's
// config.
func startUIMesh(t *testing.T, h1Extra string) *uiMesh {
	t.Helper()
	nw := New(t, 3)
	h1, h2, h3 := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2]
	serveApp(t, h1, uiWebPort, "web", nil)
	telemetry := func(h *Host) string {
		return fmt.Sprintf("telemetry:\n  listen: %s\n", net.JoinHostPort(h.Addr, uiTelemetry))
	}
	enc, ck := Key(), Key()
	server := h1.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Server: true, BootstrapExpect: 1,
		Extra: telemetry(h1) + h1Extra + fmt.Sprintf("services:\n  - {name: web, id: web, port: %d}\n", uiWebPort)})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := server.CLI("ca", "roots")
		return err
	})
	agents := []*Agent{server}
	for _, h := range []*Host{h2, h3} {
		tok, err := server.Token(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		extra := telemetry(h)
		if h == h2 {
			extra += fmt.Sprintf("services:\n  - name: shop\n    id: shop\n    upstreams:\n      - {service: web, local_bind: %q}\n", uiUpstream)
		}
		agents = append(agents, h.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: []string{h1.Addr}, Token: tok, Extra: extra}))
	}
	waitForLeaves(t, agents, map[*Host][]string{h1: {"web"}, h2: {"shop"}})
	waitForInstances(t, agents[1], map[string]int{"web": 1})
	applyPolicy(t, server, agents, uiPolicy)
	shop := hostClient(h2, l7Workers)
	t.Cleanup(shop.CloseIdleConnections)
	Eventually(t, 30*time.Second, "a call through shop's upstream", func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+uiUpstream+"/warmup", nil)
		if r := do(shop, req); !r.reached() {
			return errors.New(r.String())
		}
		return nil
	})
	return &uiMesh{t: t, nw: nw, agents: agents, shop: shop}
}

// edgeTurnsRed loads shop → web, waits for the topology page to show the
// edge healthy, applies the Fault, and waits for it to turn red, with
// screenshots named prefix+"topology-healthy" and prefix+"topology-faulty".
func (m *uiMesh) edgeTurnsRed(b *uiBrowser, base, prefix string) {
	t := m.t
	t.Helper()
	load := (&l7Mesh{client: m.shop}).startLoad(uiLoadCalls, uiLoadRate, func(i int) l7Result {
		req, _ := http.NewRequest(http.MethodGet, "http://"+uiUpstream+"/load", nil)
		return do(m.shop, req)
	})
	defer func() { load.halt(); load.wait() }()
	edge := `g.edge-group[data-source="shop"][data-destination="web"]`
	b.page(base, "topology")
	b.waitFor(uiEdgeWithin, edge+`[data-health="ok"]`)
	b.screenshot(prefix + "topology-healthy")
	applyPolicy(t, m.agents[0], m.agents, uiFault)
	b.waitFor(uiEdgeWithin, edge+`[data-health="bad"]`)
	b.screenshot(prefix + "topology-faulty")
	label := b.textContent(edge + ` text`)
	t.Logf("shop → web under the fault: %s", label)
	if strings.Contains(label, "p99 —") {
		t.Errorf("shop → web shows no p99: %q", label)
	}
}

// TestUIACL: with ACLs on, a page refuses without a token, and shows what
// a token may read once one is given.
func TestUIACL(t *testing.T) {
	if _, err := os.Stat(uiChromium); err != nil {
		t.Fatal("chromium is not installed: run scripts/deps.sh e2e (Debian package chromium)")
	}
	artifacts := uiArtifacts(t)
	nw := New(t, 1)
	h1 := nw.Hosts[0]
	mgmt, err := acl.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	server := h1.StartAgent(AgentOptions{ClusterKey: Key(), Server: true, BootstrapExpect: 1,
		Extra: fmt.Sprintf("acl:\n  enabled: true\n  default_policy: deny\n  tokens:\n    initial_management: %q\n", mgmt)})
	Eventually(t, 90*time.Second, "the management token on h1", func() error {
		out, err := server.CLI("acl", "token", "self", "--token", mgmt)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	base := uiForward(t, h1, uiAPI)
	b := newUIBrowser(t, artifacts)
	for _, p := range []string{"nodes", "topology"} {
		b.page(base, p)
		b.run(chromedp.WaitVisible(`[data-state="token-required"]`))
		if rows := uiEval[int](b, `document.querySelectorAll("tr[data-node], g.node").length`); rows != 0 {
			t.Errorf("%s without a token shows %d rows", p, rows)
		}
		b.screenshot("acl-refused-" + p)
	}
	// Typed, and sent with Enter, as a keyboard user would.
	b.run(chromedp.SendKeys(`#token-input`, mgmt+kb.Enter))
	b.run(chromedp.WaitVisible(`body[data-ready="topology"] svg.graph, body[data-ready="topology"] .state.empty`))
	b.page(base, "nodes")
	b.run(chromedp.WaitVisible(`tr[data-node="h1"]`))
	b.screenshot("acl-token-nodes")

	// A token that may read node h1 only: the CA page says what it lacks,
	// in place, and the nodes page shows h1 without its Raft role.
	uiPut(t, base, mgmt, "/v1/acl/policy", `{"name": "h1-read", "rules": {"node": {"h1": "read"}}}`)
	var tok struct {
		SecretID string `json:"secret_id"`
	}
	if err := json.Unmarshal(uiPut(t, base, mgmt, "/v1/acl/token", `{"description": "ui test", "policies": [{"name": "h1-read"}]}`), &tok); err != nil || tok.SecretID == "" {
		t.Fatalf("token: %v", err)
	}
	// The API's refusals of this token, which the pages show; Chromium
	// logs each refused call.
	b.expectRefusals("/v1/ca/leaf", "/v1/agent/self", "/v1/operator/raft/peers")
	b.run(chromedp.Click(`#token-clear`), chromedp.SendKeys(`#token-input`, tok.SecretID+kb.Enter))
	b.page(base, "ca")
	b.run(chromedp.WaitVisible(`[data-state="denied"]`))
	if got := b.textContent(`[data-state="denied"]`); !strings.Contains(got, "ca:read") {
		t.Errorf("the CA page's refusal %q does not name ca:read", got)
	}
	b.screenshot("acl-limited-ca")
	b.page(base, "nodes")
	if got := b.textContent(`tr[data-node="h1"]`); !strings.Contains(got, "not allowed") {
		t.Errorf("h1's row with a token without operator:read: %q, want its Raft role not allowed", got)
	}
	b.checkConsole()
}

// uiPut sends a PUT with token through the forwarder and returns the body
// of its 200 answer.
func uiPut(t *testing.T, base, token, path, body string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, base+path, strings.NewReader(body))
	req.Header.Set("X-Meshwork-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %s %s", path, resp.Status, b)
	}
	return b
}

// uiArtifacts is the directory the screenshots go to, named in the log.
func uiArtifacts(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "artifacts")
	if d := os.Getenv("MESHWORK_ARTIFACTS"); d != "" {
		dir = filepath.Join(d, t.Name())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// uiForward listens on the test's loopback and forwards each connection to
// addr inside h: Chromium runs outside the hosts' namespaces. The Host
// header stays 127.0.0.1:<port>, which the API accepts.
func uiForward(t *testing.T, h *Host, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			up, err := h.DialContext(ctx, "tcp", addr)
			cancel()
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	return "http://" + l.Addr().String()
}

// uiBrowser is one headless Chromium tab, and the errors it reported.
type uiBrowser struct {
	t   *testing.T
	ctx context.Context
	dir string

	mu       sync.Mutex
	errors   []string
	refusals []string // paths whose 403 the test expects
}

// expectRefusals lets Chromium's log of a 403 from these API paths pass:
// the API's refusal of a limited token, which the page shows.
func (b *uiBrowser) expectRefusals(paths ...string) {
	b.mu.Lock()
	b.refusals = append(b.refusals, paths...)
	b.mu.Unlock()
}

// expected reports whether m is the log of an expected refusal.
func (b *uiBrowser) expected(m chromedp.ConsoleMessage) bool {
	if m.Source != "network" || !strings.Contains(m.Text, "status of 403") {
		return false
	}
	for _, p := range b.refusals {
		if strings.Contains(m.URL, p) {
			return true
		}
	}
	return false
}

func newUIBrowser(t *testing.T, dir string) *uiBrowser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(uiChromium),
		chromedp.NoSandbox, // the test runs as root
		chromedp.WindowSize(1280, 800),
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	b := &uiBrowser{t: t, ctx: ctx, dir: dir}
	// The first run starts the browser, with no timeout (it would bound
	// the browser's life).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("chromium: start: %v", err)
	}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				if !b.expected(m) {
					b.errors = append(b.errors, fmt.Sprintf("%s (%s %s:%d)", m.String(), m.Source, m.URL, m.Line))
				}
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancelTab(); cancelAlloc(); <-done })
	return b
}

// bounded is the tab's context with a bound for one step.
func (b *uiBrowser) bounded(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, d)
}

// run runs actions within 30 s, failing the test on error.
func (b *uiBrowser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.bounded(30 * time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.screenshot("failure")
		b.t.Fatalf("chromium: %v", err)
	}
}

// eval evaluates a JavaScript expression.
func uiEval[T any](b *uiBrowser, expr string) T {
	b.t.Helper()
	ctx, cancel := b.bounded(10 * time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("chromium: evaluate %s: %v", expr, err)
	}
	return v
}

// text is the visible text of the first element sel matches.
func (b *uiBrowser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := b.bounded(10 * time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		b.t.Fatalf("chromium: text of %s: %v", sel, err)
	}
	return v
}

// textContent is the text of the first element sel matches, rendered or
// not (SVG text has no innerText).
func (b *uiBrowser) textContent(sel string) string {
	b.t.Helper()
	ctx, cancel := b.bounded(10 * time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.TextContent(sel))
	if err != nil {
		b.t.Fatalf("chromium: text content of %s: %v", sel, err)
	}
	return v
}

// page opens a page afresh and waits until it is drawn.
func (b *uiBrowser) page(base, name string) {
	b.t.Helper()
	b.run(chromedp.Navigate("about:blank"), chromedp.Navigate(base+"/ui/#/"+name),
		chromedp.WaitReady(fmt.Sprintf(`body[data-ready=%q]`, name)))
}

// waitFor waits until sel is visible, within d.
func (b *uiBrowser) waitFor(d time.Duration, sel string) {
	b.t.Helper()
	ctx, cancel := b.bounded(d)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(sel)); err != nil {
		b.screenshot("failure")
		b.t.Fatalf("chromium: %s not shown within %s: %v", sel, d, err)
	}
}

// screenshot saves the whole page as name.png.
func (b *uiBrowser) screenshot(name string) {
	ctx, cancel := b.bounded(20 * time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		b.t.Errorf("screenshot %s: not a PNG", name)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
}

// checkConsole fails the test on any error Chromium reported.
func (b *uiBrowser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errors {
		b.t.Errorf("chromium reported: %s", e)
	}
}
