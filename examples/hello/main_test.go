package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHelloAnswersWithItsName(t *testing.T) {
	mux := newMux("web-1", "127.0.0.1:8080")
	for _, tc := range []struct {
		url    string
		status int
		body   string
	}{
		{"/", http.StatusOK, "hello from web-1 (127.0.0.1:8080)"},
		{"/any/path?delay=0s", http.StatusOK, "hello from web-1"},
		{"/health", http.StatusOK, "ok"},
		{"/?delay=soon", http.StatusBadRequest, `delay "soon"`},
		{"/?delay=-1s", http.StatusBadRequest, `delay "-1s"`},
		{"/?delay=1h", http.StatusBadRequest, "from 0 to 30s"},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.url, nil))
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("GET %s: %d %q, want %d with %q", tc.url, rec.Code, rec.Body.String(), tc.status, tc.body)
		}
	}
}
