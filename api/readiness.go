package api

import (
	"context"
	"net/http"
)

// Readiness is whether an agent is ready to carry the mesh's traffic, check
// by check: the body of the telemetry listener's GET /readyz and of the
// API's GET /v1/agent/ready (docs/observability-health.md).
type Readiness struct {
	// Ready is true when every check is OK.
	Ready bool `json:"ready"`
	// Checks are the checks in a fixed order: gossip, catalog, certificate,
	// policy.
	Checks []ReadinessCheck `json:"checks"`
}

// ReadinessCheck is the result of one readiness check.
type ReadinessCheck struct {
	// Name names the check: "gossip", "catalog", "certificate" or "policy".
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Reason says why the check passes or fails, for an operator.
	Reason string `json:"reason"`
}

// Ready returns the agent's readiness. An agent that is not ready is not
// an error: the answer says which checks fail.
func (c *Client) Ready(ctx context.Context) (*Readiness, error) {
	var out Readiness
	if _, err := c.Do(ctx, http.MethodGet, "/v1/agent/ready", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
