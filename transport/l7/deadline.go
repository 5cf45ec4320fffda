package l7

import (
	"net/http"
	"strconv"
	"time"
)

// DeadlineHeader carries a request's remaining budget, in milliseconds,
// to the app; an app forwarding it on its next call through the mesh
// keeps the budget.
const DeadlineHeader = "X-Meshwork-Deadline-Ms"

// maxBudget caps a budget read from a header: longer ones are treated as
// none, as a gRPC timeout of 100 million hours is.
const maxBudget = 24 * time.Hour

// callerBudget reads the budget a request brings: the smallest of
// x-meshwork-deadline-ms and grpc-timeout. ok is false when it brings
// none. A budget of zero means the deadline already passed.
func callerBudget(h http.Header) (d time.Duration, ok bool) {
	if v := h[DeadlineHeader]; len(v) > 0 {
		if ms, err := strconv.ParseInt(v[0], 10, 64); err == nil && ms >= 0 && time.Duration(ms) <= maxBudget/time.Millisecond {
			d, ok = time.Duration(ms)*time.Millisecond, true
		}
	}
	if v := h["Grpc-Timeout"]; len(v) > 0 {
		if g, gok := parseGRPCTimeout(v[0]); gok && g <= maxBudget && (!ok || g < d) {
			d, ok = g, true
		}
	}
	return d, ok
}

// parseGRPCTimeout reads a grpc-timeout value: at most 8 digits and a unit
// (H, M, S, m, u, n).
func parseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(maxBudget/unit) {
		return maxBudget + 1, true
	}
	return time.Duration(n) * unit, true
}

// formatGRPCTimeout writes d as a grpc-timeout value, in the finest unit
// that fits 8 digits.
func formatGRPCTimeout(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	for _, u := range []struct {
		unit time.Duration
		c    byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}} {
		if n := int64(d / u.unit); n < 1e8 {
			// Round up so that the app never gets less than nothing.
			if d%u.unit != 0 {
				n++
			}
			return strconv.FormatInt(n, 10) + string(u.c)
		}
	}
	return strconv.FormatInt(int64(d/time.Hour), 10) + "H"
}

// deliverBudget sets the headers that tell the app its remaining budget:
// x-meshwork-deadline-ms always, and grpc-timeout for gRPC when the
// budget is shorter than the app's own. Without a budget it removes a
// deadline header the caller may have sent, which only the mesh sets.
func deliverBudget(h http.Header, remaining time.Duration, has bool, grpc bool) {
	if !has {
		delete(h, DeadlineHeader)
		return
	}
	ms := remaining.Milliseconds()
	if ms < 0 {
		ms = 0
	}
	h[DeadlineHeader] = []string{strconv.FormatInt(ms, 10)}
	if grpc {
		if cur, ok := parseGRPCTimeout(h.Get("Grpc-Timeout")); !ok || remaining < cur {
			h["Grpc-Timeout"] = []string{formatGRPCTimeout(remaining)}
		}
	}
}
