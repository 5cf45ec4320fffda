package ui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/internal/httpjson"
)

func TestAssets(t *testing.T) {
	mux := http.NewServeMux()
	if err := RegisterAPI(API{}, acl.MountAllowAll(mux)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpjson.Mux(mux))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, method, path string
		status             int
		contentType        string
		contains           string
	}{
		{"index", "GET", "/ui/", 200, "text/html; charset=utf-8", `<script src="/ui/app.js"`},
		{"index by name", "GET", "/ui/index.html", 200, "text/html; charset=utf-8", "<title>Meshwork</title>"},
		{"script", "GET", "/ui/app.js", 200, "text/javascript; charset=utf-8", "sessionStorage"},
		{"style", "GET", "/ui/app.css", 200, "text/css; charset=utf-8", "@media"},
		{"icon", "GET", "/ui/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"head", "HEAD", "/ui/app.js", 200, "text/javascript; charset=utf-8", ""},
		{"unknown file", "GET", "/ui/nope.js", 404, "application/json", `"code": "not_found"`},
		{"no listing of the embedded directory", "GET", "/ui/assets/", 404, "application/json", `"code": "not_found"`},
		{"no embedded path", "GET", "/ui/assets/app.js", 404, "application/json", `"code": "not_found"`},
		{"no escape", "GET", "/ui/..%2fui.go", 404, "application/json", `"code": "not_found"`},
		{"no subdirectory", "GET", "/ui/x/", 404, "application/json", `"code": "not_found"`},
		{"no write", "PUT", "/ui/app.js", 405, "application/json", `"code": "method_not_allowed"`},
		{"settings", "GET", "/v1/ui/config", 200, "application/json", `"acl_enabled": false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.contentType || !strings.Contains(string(body), tc.contains) {
				t.Fatalf("%s %s: %s %q, %.200q; want %d %q with %q", tc.method, tc.path, resp.Status, resp.Header.Get("Content-Type"), body, tc.status, tc.contentType, tc.contains)
			}
			if tc.status != 200 || strings.HasPrefix(tc.path, "/v1/") {
				return
			}
			if tc.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD answered a body of %d bytes", len(body))
			}
			h := resp.Header
			if h.Get("Cache-Control") != "no-cache" || h.Get("ETag") == "" || h.Get("X-Content-Type-Options") != "nosniff" ||
				!strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") || h.Get("X-Frame-Options") != "DENY" {
				t.Errorf("headers %v", h)
			}
		})
	}
}

// TestAssetRevalidation: an unchanged asset is answered 304 to its ETag.
func TestAssetRevalidation(t *testing.T) {
	h := AssetHandler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/app.js", nil))
	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest("GET", "/ui/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Fatalf("revalidation: %d with %d bytes", rec.Code, rec.Body.Len())
	}
	req.Header.Set("If-None-Match", `"stale"`)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("stale ETag: %d", rec.Code)
	}
}

// TestAssetsAreSelfContained: nothing is loaded from elsewhere (no CDN, no
// remote font), and no page relies on inline script, which the CSP refuses.
func TestAssetsAreSelfContained(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "app.css"} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", "//cdn", "@import", "fonts.googleapis"} {
			if strings.Contains(s, bad) && !(name == "app.js" && bad == "http://" && strings.Count(s, "http://") == strings.Count(s, `"http://www.w3.org/2000/svg"`)) {
				t.Errorf("%s refers to %q: the UI must work with no internet", name, bad)
			}
		}
	}
	idx, _ := assets.ReadFile("assets/index.html")
	if strings.Contains(string(idx), "<script>") || strings.Contains(string(idx), "style=") || strings.Contains(string(idx), "onclick") {
		t.Error("index.html has inline script or style, which the CSP refuses")
	}
}

// TestLeafExpiryMetricName: the UI reads the CA's metric by its name.
func TestLeafExpiryMetricName(t *testing.T) {
	if leafExpiryMetric != ca.MetricLeafExpiry {
		t.Fatalf("leafExpiryMetric %q, ca.MetricLeafExpiry %q", leafExpiryMetric, ca.MetricLeafExpiry)
	}
}

func TestSettingsJSON(t *testing.T) {
	b, _ := json.Marshal(Settings{ACLEnabled: true, MetricsProvider: ProviderPrometheus})
	if string(b) != `{"acl_enabled":true,"metrics_provider":"prometheus"}` {
		t.Fatal(string(b))
	}
}
