package l7

import (
	"fmt"
	"net/http"

	"github.com/meshwork/meshwork/transport/breaker"
)

// admit takes one of the destination's max_requests for the request, held
// until end. Over the limit the request fails at once with 503 (gRPC
// UNAVAILABLE) and circuit_open: it neither waits nor reaches an
// instance, so a destination already at its limit is not loaded further.
func (c *call) admit() *meshError {
	bs := c.p.deps.Breakers
	if bs == nil {
		return nil
	}
	limit := breaker.Max(c.res.CircuitBreaker, breaker.Requests)
	dest := c.rt.Destination()
	b := bs.For(dest)
	if !b.Acquire(breaker.Requests, limit) {
		return &meshError{http.StatusServiceUnavailable, ReasonCircuitOpen,
			fmt.Sprintf("%s: %s %d reached", dest, breaker.Requests, limit)}
	}
	c.admitted = b
	return nil
}
