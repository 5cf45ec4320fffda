package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		Port int    `json:"port"`
	}
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"good", `{"name":"web","port":80}`, ""},
		{"empty", ``, "body is empty"},
		{"unknown field", `{"nmae":"web"}`, `unknown field "nmae"`},
		{"wrong type", `{"port":"80"}`, `field "port"`},
		{"syntax", `{"name":`, "bad request body"},
		{"trailing", `{"name":"a"} {}`, "trailing data"},
		{"too large", `{"name":"` + strings.Repeat("a", MaxBody) + `"}`, "bad request body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("PUT", "/", strings.NewReader(tc.in))
			var b body
			err := Decode(r, &b)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadBody) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Decode error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestReadAnswer(t *testing.T) {
	var v struct{ A int }
	if err := ReadAnswer(strings.NewReader(`{"A":3}`), &v); err != nil || v.A != 3 {
		t.Fatalf("decode: %v, %+v", err, v)
	}
	var b strings.Builder
	if err := ReadAnswer(strings.NewReader("raw bytes"), &b); err != nil || b.String() != "raw bytes" {
		t.Fatalf("copy: %v, %q", err, b.String())
	}
	if err := ReadAnswer(strings.NewReader("ignored"), nil); err != nil {
		t.Fatalf("discard: %v", err)
	}
	if err := ReadAnswer(strings.NewReader("{"), &v); err == nil {
		t.Fatal("a truncated JSON answer was accepted")
	}
}

// TestErrorShape: every way of answering an error gives a message and a
// code, the status's generic one when the caller names none.
func TestErrorShape(t *testing.T) {
	for _, tc := range []struct {
		name   string
		write  func(w http.ResponseWriter)
		status int
		code   string
	}{
		{"Error 400", func(w http.ResponseWriter) { Error(w, 400, errors.New("bad")) }, 400, CodeInvalid},
		{"Error 404", func(w http.ResponseWriter) { Error(w, 404, errors.New("gone")) }, 404, CodeNotFound},
		{"Error 503", func(w http.ResponseWriter) { Error(w, 503, errors.New("later")) }, 503, CodeNotReady},
		{"Error 500", func(w http.ResponseWriter) { Error(w, 500, errors.New("oops")) }, 500, CodeInternal},
		{"CodedError", func(w http.ResponseWriter) { CodedError(w, 413, CodePolicyCap, errors.New("big")) }, 413, CodePolicyCap},
		{"WriteError keeps its code", func(w http.ResponseWriter) {
			WriteError(w, 409, ErrorBody{Error: "x", Code: CodeCASConflict})
		}, 409, CodeCASConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.write(rec)
			var eb ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || rec.Code != tc.status || eb.Code != tc.code || eb.Error == "" {
				t.Fatalf("%d %s (%v); want %d with code %q", rec.Code, rec.Body, err, tc.status, tc.code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			if ra := rec.Header().Get("Retry-After"); (ra != "") != (tc.status == http.StatusServiceUnavailable) {
				t.Fatalf("Retry-After %q on %d", ra, tc.status)
			}
		})
	}
}

// TestCodesDocumented: docs/api.md lists every code with its status.
func TestCodesDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, c := range Codes {
		row := fmt.Sprintf("| `%s` | %d | %s |", c.Code, c.Status, c.Meaning)
		if !strings.Contains(doc, row) {
			t.Errorf("docs/api.md lacks the row\n%s", row)
		}
	}
}

// TestCodes: the list of codes has each once, with a status and a meaning,
// and names every code the generic mapping answers.
func TestCodes(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Codes {
		if seen[c.Code] {
			t.Errorf("code %q listed twice", c.Code)
		}
		seen[c.Code] = true
		if c.Status < 400 || c.Meaning == "" {
			t.Errorf("code %q: status %d, meaning %q", c.Code, c.Status, c.Meaning)
		}
	}
	for status := 400; status < 600; status++ {
		if code := GenericCode(status); !seen[code] {
			t.Errorf("GenericCode(%d) = %q, not in Codes", status, code)
		}
	}
}

// TestMux: what no route matches is answered in the one shape: 405 with
// Allow for a known path, 404 for an unknown one; a deprecated route is
// served and marked.
func TestMux(t *testing.T) {
	mux := http.NewServeMux()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { Write(w, 200, "ok") })
	mux.Handle("PUT /v1/thing", ok)
	mux.Handle("POST /v1/thing", Deprecated{Successor: "PUT /v1/thing", Handler: ok})
	h := Mux(mux)
	for _, tc := range []struct {
		method, path string
		status       int
		code, allow  string
		deprecated   bool
	}{
		{"PUT", "/v1/thing", 200, "", "", false},
		{"POST", "/v1/thing", 200, "", "", true},
		{"GET", "/v1/thing", 405, CodeMethodNotAllowed, "POST, PUT", false},
		{"GET", "/v1/other", 404, CodeUnknownEndpoint, "", false},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		var eb ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &eb)
		if rec.Code != tc.status || eb.Code != tc.code || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %s, Allow %q; want %d %q, Allow %q", tc.method, tc.path, rec.Code, rec.Body, rec.Header().Get("Allow"), tc.status, tc.code, tc.allow)
		}
		if got := rec.Header().Get(DeprecationHeader); (got != "") != tc.deprecated || (tc.deprecated && !strings.HasPrefix(got, "@")) {
			t.Errorf("%s %s: Deprecation %q", tc.method, tc.path, got)
		}
	}
}
