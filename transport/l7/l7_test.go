package l7

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCallerBudget(t *testing.T) {
	for _, tc := range []struct {
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{http.Header{}, 0, false},
		{http.Header{DeadlineHeader: {"250"}}, 250 * time.Millisecond, true},
		{http.Header{DeadlineHeader: {"0"}}, 0, true},
		{http.Header{DeadlineHeader: {"-5"}}, 0, false},
		{http.Header{DeadlineHeader: {"soon"}}, 0, false},
		{http.Header{"Grpc-Timeout": {"1S"}}, time.Second, true},
		{http.Header{"Grpc-Timeout": {"1S"}, DeadlineHeader: {"300"}}, 300 * time.Millisecond, true},
		{http.Header{"Grpc-Timeout": {"20m"}, DeadlineHeader: {"300"}}, 20 * time.Millisecond, true},
		{http.Header{"Grpc-Timeout": {"123456789S"}}, 0, false}, // 9 digits
		{http.Header{"Grpc-Timeout": {"99999999H"}}, 0, false},  // beyond a day: none
		{http.Header{"Grpc-Timeout": {"5x"}}, 0, false},
	} {
		got, ok := callerBudget(tc.h)
		if got != tc.want || ok != tc.ok {
			t.Errorf("callerBudget(%v) = %v, %v; want %v, %v", tc.h, got, ok, tc.want, tc.ok)
		}
	}
}

func TestGRPCTimeoutRoundTrip(t *testing.T) {
	for _, d := range []time.Duration{0, time.Nanosecond, 1500 * time.Microsecond, 3 * time.Second, 90 * time.Minute, 23 * time.Hour} {
		s := formatGRPCTimeout(d)
		if len(s) > 9 {
			t.Errorf("formatGRPCTimeout(%v) = %q: more than 8 digits", d, s)
		}
		back, ok := parseGRPCTimeout(s)
		if !ok || back < d {
			t.Errorf("formatGRPCTimeout(%v) = %q reads back as %v, %v: less than given", d, s, back, ok)
		}
	}
}

func TestDeliverBudget(t *testing.T) {
	h := http.Header{DeadlineHeader: {"99999"}}
	deliverBudget(h, 0, false, false)
	if _, ok := h[DeadlineHeader]; ok {
		t.Error("a caller's own deadline header reached the app with no budget")
	}
	h = http.Header{"Grpc-Timeout": {"10S"}}
	deliverBudget(h, 1500*time.Millisecond, true, true)
	if h.Get(DeadlineHeader) != "1500" || h.Get("Grpc-Timeout") != "1500000u" {
		t.Errorf("budget 1.5s: %v", h)
	}
	h = http.Header{"Grpc-Timeout": {"1m"}}
	deliverBudget(h, time.Second, true, true)
	if h.Get("Grpc-Timeout") != "1m" {
		t.Errorf("a shorter grpc-timeout of the app's was replaced: %v", h)
	}
}

func TestRemoveHopHeaders(t *testing.T) {
	h := http.Header{
		"Connection":        {"keep-alive, X-Private"},
		"X-Private":         {"secret"},
		"Keep-Alive":        {"timeout=5"},
		"Te":                {"trailers, deflate"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
		"X-Kept":            {"1"},
	}
	removeHopHeaders(h)
	if len(h) != 2 || h.Get("X-Kept") != "1" || h.Get("Te") != "trailers" {
		t.Errorf("after removal: %v; want X-Kept and Te: trailers", h)
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":             "/",
		"/":            "/",
		"/admin":       "/admin",
		"//admin":      "/admin",
		"/a/../admin":  "/admin",
		"/admin/":      "/admin/",
		"/./admin/./x": "/admin/x",
		"admin":        "/admin",
		"/../../etc":   "/etc",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMeshErrorAnswers(t *testing.T) {
	for _, tc := range []struct {
		e        meshError
		grpcCode string
	}{
		{meshError{http.StatusServiceUnavailable, ReasonNoInstance, "x"}, "14"},
		{meshError{http.StatusGatewayTimeout, ReasonTimeout, "x"}, "4"},
		{meshError{http.StatusForbidden, ReasonDenied, "x"}, "7"},
		{meshError{http.StatusBadGateway, ReasonConnectFailed, "x"}, "14"},
	} {
		status, h := tc.e.header(false)
		if status != tc.e.status || h.Get(ErrorHeader) != tc.e.reason {
			t.Errorf("%s over HTTP: %d %v", tc.e.reason, status, h)
		}
		status, h = tc.e.header(true)
		if status != 200 || h.Get("Grpc-Status") != tc.grpcCode || h.Get(ErrorHeader) != tc.e.reason ||
			!strings.HasPrefix(h.Get("Content-Type"), "application/grpc") {
			t.Errorf("%s over gRPC: %d %v; want grpc-status %s", tc.e.reason, status, h, tc.grpcCode)
		}
	}
	if got := grpcMessage("50% done\n"); got != "50%25 done%0A" {
		t.Errorf("grpcMessage = %q", got)
	}
}

// FuzzCallerBudget feeds the deadline headers a caller controls: never a
// panic, never a negative budget, never more than a day.
func FuzzCallerBudget(f *testing.F) {
	for _, s := range []string{"", "0", "250", "-1", "1S", "99999999H", "12345678n", "5x", "1m"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, deadline, grpcTimeout string) {
		h := http.Header{DeadlineHeader: {deadline}, "Grpc-Timeout": {grpcTimeout}}
		d, ok := callerBudget(h)
		if d < 0 || d > maxBudget || (!ok && d != 0) {
			t.Fatalf("callerBudget(%q, %q) = %v, %v", deadline, grpcTimeout, d, ok)
		}
		if g, ok := parseGRPCTimeout(grpcTimeout); ok && g < 0 {
			t.Fatalf("parseGRPCTimeout(%q) = %v", grpcTimeout, g)
		}
	})
}
