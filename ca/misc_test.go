package ca

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

func TestLocalAPI(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	h := NewAPIHandler(APIDeps{Manager: rs.mgr, Server: srv})
	do := func(method, path, body string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if strings.Contains(w.Body.String(), "PRIVATE") {
			t.Fatalf("%s %s returned key material", method, path)
		}
		return w
	}

	var roots RootsResponse
	if w := do("GET", APIPathRoots, ""); w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &roots) != nil {
		t.Fatalf("roots: %d %s", w.Code, w.Body)
	}
	if roots.TrustDomain != testTD || len(roots.Roots) != 1 || !roots.Roots[0].Active || roots.Roots[0].Fingerprint != srv.Bundle().ActiveRoot || roots.Rotation == nil || roots.Rotation.InProgress {
		t.Fatalf("roots answer %+v", roots)
	}

	var leaf LeafInfo
	if w := do("GET", APIPathLeaf, ""); w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &leaf) != nil {
		t.Fatalf("leaf: %d %s", w.Code, w.Body)
	}
	if !slices.Equal(leaf.IDs, []string{"spiffe://mesh.test/node/srv1"}) || leaf.ExpiresIn <= 0 || leaf.NotAfter.Before(time.Now()) || !strings.Contains(leaf.Chain, "BEGIN CERTIFICATE") {
		t.Fatalf("leaf answer %+v", leaf)
	}

	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"ok", `{"node":"web-1","ttl":"5m"}`, 200, ""},
		{"default ttl", `{"node":"web-2"}`, 200, ""},
		{"bad node", `{"node":"a/b"}`, 400, "invalid"},
		{"bad ttl", `{"node":"a","ttl":"soon"}`, 400, "invalid"},
		{"ttl too long", `{"node":"a","ttl":"2h"}`, 400, "invalid"},
		{"unknown field", `{"node":"a","x":1}`, 400, "invalid"},
		{"not JSON", `nope`, 400, "invalid"},
	} {
		t.Run("token "+tc.name, func(t *testing.T) {
			w := do("PUT", APIPathToken, tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.code != "" {
				var e RPCError
				if json.Unmarshal(w.Body.Bytes(), &e); e.Code != tc.code || e.Error == "" {
					t.Fatalf("error %+v, want code %s", e, tc.code)
				}
				return
			}
			var tr TokenResponse
			if err := json.Unmarshal(w.Body.Bytes(), &tr); err != nil || tr.Token == "" || tr.Expires.Before(time.Now()) {
				t.Fatalf("token answer %s", w.Body)
			}
			if pin, err := tokenRootPin(tr.Token); err != nil || pin != srv.Bundle().ActiveRoot {
				t.Fatalf("token pins %q (%v), want the active root", pin, err)
			}
		})
	}

	// POST, the method before PUT, still works for one release, marked
	// deprecated; PUT is not.
	w := do("POST", APIPathToken, `{"node":"web-3"}`)
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Deprecation"), "@") {
		t.Fatalf("deprecated POST token: %d, Deprecation %q: %s", w.Code, w.Header().Get("Deprecation"), w.Body)
	}
	if w := do("PUT", APIPathToken, `{"node":"web-3"}`); w.Header().Get("Deprecation") != "" {
		t.Fatalf("PUT token is marked deprecated")
	}

	if w := do("PUT", APIPathRotate, ""); w.Code != 200 {
		t.Fatalf("rotate: %d %s", w.Code, w.Body)
	}
	w = do("POST", APIPathRotate, "")
	var e RPCError
	if json.Unmarshal(w.Body.Bytes(), &e); w.Code != http.StatusConflict || e.Code != "rotation_in_progress" || w.Header().Get("Deprecation") == "" {
		t.Fatalf("second rotate, by the deprecated POST: %d %s", w.Code, w.Body)
	}

	// Unknown routes and wrong methods are answered in JSON, with a code.
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/ca/nope", 404, "unknown_endpoint"},
		{"DELETE", APIPathRoots, 405, "method_not_allowed"},
	} {
		w := do(tc.method, tc.path, "")
		var e RPCError
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != tc.status || e.Code != tc.code || e.Error == "" {
			t.Fatalf("%s %s: %d %s, want %d %s in JSON", tc.method, tc.path, w.Code, w.Body, tc.status, tc.code)
		}
	}

	// On a client agent there is no CA to make tokens or rotate.
	ch := NewAPIHandler(APIDeps{Manager: rs.mgr})
	for _, p := range []string{APIPathToken, APIPathRotate} {
		w := httptest.NewRecorder()
		ch.ServeHTTP(w, httptest.NewRequest("PUT", p, strings.NewReader(`{"node":"x"}`)))
		var e RPCError
		if json.Unmarshal(w.Body.Bytes(), &e); w.Code != http.StatusNotImplemented || e.Code != "not_server" {
			t.Fatalf("%s on a client: %d", p, w.Code)
		}
	}
}

// TestNoKeyMaterialInTheClear checks where keys may appear: sealed in the
// CA state, never in the public bundle, never in clear.
func TestNoKeyMaterialInTheClear(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	ctx := context.Background()
	auth, _, _ := c.state.Get(ctx, KeyAuthority)
	bundle, _, _ := c.state.Get(ctx, KeyBundle)
	st, _ := decodeAuthorityState(auth)

	sg := srv.cur.Load()
	issuerDER, _ := marshalKey(sg.issuerKey)
	_, rootKey, err := srv.openRoot(st, st.Issuer.Root)
	if err != nil {
		t.Fatal(err)
	}
	rootDER, _ := marshalKey(rootKey)
	provJSON, err := open(c.key, purposeProvisionerKey, st.Provisioner.SealedKey)
	if err != nil {
		t.Fatal(err)
	}
	var prov struct {
		D string `json:"d"`
	}
	if json.Unmarshal(provJSON, &prov); prov.D == "" {
		t.Fatal("provisioner key has no private part")
	}
	for name, secret := range map[string][]byte{
		"issuer key":      issuerDER,
		"root key":        rootDER,
		"issuer scalar":   sg.issuerKey.D.Bytes(),
		"provisioner key": []byte(prov.D),
	} {
		for where, blob := range map[string][]byte{"ca/authority": auth, "ca/bundle": bundle} {
			if bytes.Contains(blob, secret) || bytes.Contains(blob, []byte(base64.StdEncoding.EncodeToString(secret))) {
				t.Errorf("%s appears in clear in %s", name, where)
			}
		}
	}
	if bytes.Contains(bundle, []byte("sealed")) || bytes.Contains(bundle, []byte("provisioner")) {
		t.Error("the public bundle carries private parts of the state")
	}
}

func TestLoadStateKey(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ca", "state.key")
	if _, err := LoadStateKey(p, false); err == nil {
		t.Fatal("a missing key file was accepted without create")
	}
	k1, err := LoadStateKey(p, true)
	if err != nil {
		t.Fatal(err)
	}
	assertMode(t, p, 0o600)
	k2, err := LoadStateKey(p, false)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reload: %v", err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStateKey(p, false); err == nil {
		t.Fatal("a key file readable by others was accepted")
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStateKey(bad, false); err == nil {
		t.Fatal("a short key was accepted")
	}
	// Sealed blobs are bound to their purpose.
	sealed, _ := seal(k1, purposeRootKey, []byte("x"))
	if _, err := open(k1, purposeIssuerKey, sealed); !errors.Is(err, ErrStateKey) {
		t.Fatalf("open with another purpose: %v", err)
	}
}

func TestMetricNames(t *testing.T) {
	c := newCluster(t)
	reg := prometheus.NewRegistry()
	srv := c.server("srv1", func(_ *ServerConfig, d *ServerDeps) { d.Registerer = reg })
	m, err := NewManager(ManagerConfig{TrustDomain: testTD, Node: "srv1"},
		ManagerDeps{Issuer: srv.LocalIssuer(), Bundles: NewStateBundleSource(c.state, testTD), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitReady(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
		if mf.GetName() == MetricLeafExpiry {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v <= 0 || v > 24*3600 {
				t.Errorf("%s = %v", MetricLeafExpiry, v)
			}
		}
		if mf.GetName() == MetricRootExpiry {
			if len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetLabel()[0].GetName() != "root" {
				t.Errorf("%s: %v", MetricRootExpiry, mf.GetMetric())
			}
		}
	}
	want := []string{MetricIntermediateExpiry, MetricIssueDuration, MetricIssueErrors, MetricIssued, MetricLeafExpiry, MetricRenewals,
		MetricRootExpiry, MetricRotationPending, MetricRotations, MetricServicesWithheld, MetricStateErrors, MetricTokensCreated}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
	for _, n := range want {
		if !strings.HasPrefix(n, "meshwork_ca_") {
			t.Errorf("%s lacks the meshwork_ca_ prefix", n)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	stepOK := StepCAConfig{URL: "https://127.0.0.1:9000", RootFingerprint: strings.Repeat("ab", 32), Provisioner: "mesh", PasswordFile: pw}
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string // "" means valid
	}{
		{"defaults", Config{}, ""},
		{"step-ca", Config{Provider: ProviderStepCA, StepCA: stepOK}, ""},
		{"provider", Config{Provider: "vault"}, "ca.provider"},
		{"trust domain", Config{TrustDomain: "Mesh!"}, "ca.trust_domain"},
		{"leaf ttl", Config{LeafTTL: time.Second}, "ca.leaf_ttl"},
		{"step url", Config{Provider: ProviderStepCA, StepCA: StepCAConfig{URL: "http://x", RootFingerprint: stepOK.RootFingerprint, Provisioner: "p", PasswordFile: pw}}, "ca.step_ca.url"},
		{"step fingerprint", Config{Provider: ProviderStepCA, StepCA: StepCAConfig{URL: stepOK.URL, RootFingerprint: "abc", Provisioner: "p", PasswordFile: pw}}, "ca.step_ca.root_fingerprint"},
		{"step provisioner", Config{Provider: ProviderStepCA, StepCA: StepCAConfig{URL: stepOK.URL, RootFingerprint: stepOK.RootFingerprint, PasswordFile: pw}}, "ca.step_ca.provisioner"},
		{"step password", Config{Provider: ProviderStepCA, StepCA: StepCAConfig{URL: stepOK.URL, RootFingerprint: stepOK.RootFingerprint, Provisioner: "p"}}, "ca.step_ca.password_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
	key := newStateKey(t)
	for _, tc := range []struct {
		name  string
		cfg   ServerConfig
		field string
	}{
		{"ok", ServerConfig{TrustDomain: testTD, Node: "s", StateKey: key}, ""},
		{"no key", ServerConfig{TrustDomain: testTD, Node: "s"}, "StateKey"},
		{"node", ServerConfig{TrustDomain: testTD, Node: "a b", StateKey: key}, "Node"},
		{"token ttl", ServerConfig{TrustDomain: testTD, Node: "s", StateKey: key, TokenTTL: 2 * time.Hour}, "TokenTTL"},
		{"intermediate", ServerConfig{TrustDomain: testTD, Node: "s", StateKey: key, LeafTTL: 24 * time.Hour, IntermediateTTL: 48 * time.Hour}, "IntermediateTTL"},
	} {
		t.Run("server "+tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
	// The configuration file form: durations as strings, unknown keys out.
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader("provider: step-ca\nleaf_ttl: 12h\nstep_ca:\n  url: https://ca:9000\n  roots_refresh: 30m\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.LeafTTL != 12*time.Hour || cfg.StepCA.RootsRefresh != 30*time.Minute || cfg.StepCA.URL != "https://ca:9000" {
		t.Fatalf("decoded %+v", cfg)
	}
	dec = yaml.NewDecoder(strings.NewReader("leaf_tll: 12h\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil {
		t.Fatal("an unknown key was accepted")
	}
}

// TestNoClientGo: smallstep and client-go together would add about 77 MB to
// the agent; only meshwork-k8s-sync may link client-go.
func TestNoClientGo(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-e", "-deps", "github.com/meshwork/meshwork/ca", "github.com/meshwork/meshwork/cmd/meshwork").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/smallstep/certificates/authority") {
		t.Fatal("the dependency list does not even hold smallstep: the check is broken")
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "k8s.io/") {
			t.Fatalf("the agent links %s", d)
		}
	}
}

// TestTokenWaitsForReady: a token asked of a server still loading the CA
// state is made once the state is loaded, not refused; a server that never
// becomes ready answers 503 not_ready once ReadyWait is over.
func TestTokenWaitsForReady(t *testing.T) {
	c := newCluster(t)
	c.server("srv1", nil) // creates the CA state
	s2 := c.idleServer(ServerConfig{Node: "srv2"})
	h := NewAPIHandler(APIDeps{Server: s2, ReadyWait: time.Minute})
	ask := func(h http.Handler, body io.Reader) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("PUT", APIPathToken, body))
		return w
	}

	// Load the state only once the handler has read the request: a
	// handler that did not wait would have answered by then.
	read := make(chan struct{})
	body := &signalReader{r: strings.NewReader(`{"node":"web-1"}`), eof: read}
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- ask(h, body) }()
	select {
	case <-read:
	case w := <-done:
		t.Fatalf("answered before reading the request: %d %s", w.Code, w.Body)
	}
	select {
	case w := <-done:
		t.Fatalf("a server that has not loaded the CA state answered at once: %d %s", w.Code, w.Body)
	default:
	}
	c.load(s2)
	if w := <-done; w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"token"`) {
		t.Fatalf("token once the state is loaded: %d %s", w.Code, w.Body)
	}

	never := c.idleServer(ServerConfig{Node: "srv3"})
	w := ask(NewAPIHandler(APIDeps{Server: never, ReadyWait: 50 * time.Millisecond}), strings.NewReader(`{"node":"web-2"}`))
	var answer struct{ Error, Code string }
	if w.Code != http.StatusServiceUnavailable || json.Unmarshal(w.Body.Bytes(), &answer) != nil || answer.Code != "not_ready" || !strings.Contains(answer.Error, "not ready") {
		t.Fatalf("token from a server that never loads the state: %d %s", w.Code, w.Body)
	}
}

// signalReader closes eof when its reader is read to the end.
type signalReader struct {
	r    io.Reader
	eof  chan struct{}
	once sync.Once
}

func (s *signalReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.once.Do(func() { close(s.eof) })
	}
	return n, err
}

// TestIntermediateExpiryCountsDown: the gauge is worked out at each
// scrape, not frozen at the intermediate's load.
func TestIntermediateExpiryCountsDown(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m, err := newServerMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return now }
	if v := metricValue(m.interExpiry); v != 0 {
		t.Fatalf("before a load: %v, want 0", v)
	}
	m.interNotAfter.Store(now.Add(48 * time.Hour).UnixNano())
	first := metricValue(m.interExpiry)
	now = now.Add(time.Hour)
	second := metricValue(m.interExpiry)
	if first != 48*3600 || second != 47*3600 {
		t.Fatalf("expiry %v then %v an hour later, want %v then %v", first, second, 48*3600, 47*3600)
	}
}
