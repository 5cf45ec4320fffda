package l7

import (
	"net/http"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
)

func TestAnswerConditions(t *testing.T) {
	tests := []struct {
		name   string
		status int
		grpc   string // grpc-status of a trailers-only answer
		reason string // x-meshwork-error
		want   condition
	}{
		{"ok", 200, "", "", 0},
		{"not found", 404, "", "", 0},
		{"conflict", 409, "", "", condRetriable4xx},
		{"internal error", 500, "", "", cond5xx},
		{"bad gateway", 502, "", "", cond5xx | condGatewayError},
		{"unavailable", 503, "", "", cond5xx | condGatewayError},
		{"gateway timeout", 504, "", "", cond5xx | condGatewayError},
		{"app unreachable", 502, "", ReasonConnectFailed, cond5xx | condGatewayError | condConnectFailure},
		{"reset is not a connect failure", 502, "", ReasonUpstreamReset, cond5xx | condGatewayError},
		{"grpc unavailable", 200, "14", "", condGRPCUnavailable},
		{"grpc resource exhausted", 200, "8", "", condGRPCResourceExhausted},
		{"grpc cancelled", 200, "1", "", condGRPCCancelled},
		{"grpc deadline exceeded", 200, "4", "", condGRPCDeadlineExceeded},
		{"grpc not found", 200, "5", "", 0},
		{"grpc garbage", 200, "x", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.grpc != "" {
				h.Set("Grpc-Status", tt.grpc)
			}
			if got := answerConditions(tt.status, h, tt.reason); got != tt.want {
				t.Fatalf("answerConditions(%d, grpc-status %q, %q) = %b, want %b", tt.status, tt.grpc, tt.reason, got, tt.want)
			}
		})
	}
}

// TestEveryConditionKnown checks that each retry_on condition the policy
// accepts has its bit here.
func TestEveryConditionKnown(t *testing.T) {
	var all condition
	for _, c := range []policy.RetryCondition{policy.RetryConnectFailure, policy.RetryRefusedStream, policy.RetryReset,
		policy.Retry5xx, policy.RetryGatewayError, policy.RetryRetriable4xx, policy.RetryGRPCUnavailable,
		policy.RetryGRPCResExhausted, policy.RetryGRPCCancelled, policy.RetryGRPCDeadlineExcdd} {
		bit := conditionBits[c]
		if bit == 0 || all&bit != 0 {
			t.Errorf("condition %q has bit %b (already used: %b)", c, bit, all)
		}
		all |= bit
	}
}

func TestBackoffBounded(t *testing.T) {
	for n := range 12 {
		ceil := min(retryBackoffBase<<n, retryBackoffMax)
		var longest time.Duration
		for range 200 {
			d := backoff(n)
			if d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %v, want 0 to %v", n, d, ceil)
			}
			longest = max(longest, d)
		}
		if longest < ceil/4 {
			t.Errorf("backoff(%d): the longest of 200 draws is %v, want it spread up to %v", n, longest, ceil)
		}
	}
}

func TestRetryReason(t *testing.T) {
	pl := retryPlan{onNames: []policy.RetryCondition{policy.RetryGatewayError, policy.Retry5xx}}
	if got := pl.reason(cond5xx | condGatewayError); got != "gateway-error" {
		t.Errorf("reason = %q, want the first listed condition that matches", got)
	}
	if got := pl.reason(cond5xx); got != "5xx" {
		t.Errorf("reason = %q, want 5xx", got)
	}
}
