package main

import (
	"context"
	"time"
)

// Issue 26's targets: what retries, circuit breakers and outlier ejection
// may cost with nothing failing, on against off.
const (
	targetResilienceP99 = 20 * time.Microsecond // more p99
	targetResilienceCPU = 0.05                  // more CPU per request
)

// resilienceOff turns every part of resilience off for every service: no
// retry, breakers at the highest limit the policy accepts, and ejection
// only after 1,000 failures in a row (docs/policy.md: the way to turn it
// off).
const resilienceOff = `kind: Resilience
name: "*"
retries: {attempts: 0}
circuit_breaker: {max_connections: 1000000, max_pending: 1000000, max_requests: 1000000}
outlier_detection: {consecutive_errors: 1000}
`

// resilienceOn is what an operator would set: retries on failures that
// a retry can help, within a budget, breakers and ejection.
const resilienceOn = `kind: Resilience
name: "*"
retries:
  attempts: 2
  retry_on: [5xx, reset, connect-failure, refused-stream]
  per_try_timeout: 1s
  budget: {percent: 20, min_per_second: 10}
circuit_breaker: {max_connections: 1024, max_pending: 1024, max_requests: 1024}
outlier_detection:
  consecutive_errors: 5
  interval: 10s
  base_ejection_time: 30s
  max_ejected_percent: 50
`

// runResilience compares resilience off and on, with nothing failing.
func runResilience(ctx context.Context) error {
	return runComparison(ctx, comparison{
		flag:      "-resilience",
		issue:     26,
		setup:     "off: no retry, no breaker, no ejection; on: 2 retries on 5xx, resets and connect failures within a 20 % budget, breakers of 1,024, ejection after 5 errors",
		offPolicy: resilienceOff,
		onPolicy:  resilienceOn,
		targetP99: targetResilienceP99,
		targetCPU: targetResilienceCPU,
	})
}
