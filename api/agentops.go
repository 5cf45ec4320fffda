package api

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// Operations on the agent itself: leaving the cluster, maintenance and its
// log.

// Leave asks the agent to leave the cluster gracefully and stop
// (PUT /v1/agent/leave). It returns once the leave is done; the agent
// stops after answering.
func (c *Client) Leave(ctx context.Context) error {
	_, err := c.Do(ctx, http.MethodPut, "/v1/agent/leave", nil, nil, nil)
	return err
}

// ForceLeave marks a failed node as left (PUT /v1/agent/force-leave/<node>):
// the cluster stops waiting for it to come back. The agent refuses a node
// that is alive (409), or that it does not know (404).
func (c *Client) ForceLeave(ctx context.Context, node string) error {
	_, err := c.Do(ctx, http.MethodPut, "/v1/agent/force-leave/"+url.PathEscape(node), nil, nil, nil)
	return err
}

// Maintenance returns the maintenance modes that are on
// (GET /v1/agent/maintenance).
func (c *Client) Maintenance(ctx context.Context) (MaintenanceStatus, error) {
	var out MaintenanceStatus
	_, err := c.Do(ctx, http.MethodGet, "/v1/agent/maintenance", nil, nil, &out)
	return out, err
}

// NodeMaintenance turns the node's maintenance on or off
// (PUT /v1/agent/maintenance), and returns the modes then on.
func (c *Client) NodeMaintenance(ctx context.Context, on bool, reason string) (MaintenanceStatus, error) {
	var out MaintenanceStatus
	_, err := c.Do(ctx, http.MethodPut, "/v1/agent/maintenance", maintenanceQuery(on, reason), nil, &out)
	return out, err
}

// ServiceMaintenance turns the maintenance of the local service id on or
// off (PUT /v1/agent/service/maintenance/<id>), and returns the modes then
// on.
func (c *Client) ServiceMaintenance(ctx context.Context, id string, on bool, reason string) (MaintenanceStatus, error) {
	var out MaintenanceStatus
	_, err := c.Do(ctx, http.MethodPut, "/v1/agent/service/maintenance/"+url.PathEscape(id), maintenanceQuery(on, reason), nil, &out)
	return out, err
}

func maintenanceQuery(on bool, reason string) url.Values {
	q := url.Values{"enable": {strconv.FormatBool(on)}}
	if reason != "" {
		q.Set("reason", reason)
	}
	return q
}

// Monitor streams the agent's log lines at level and above ("debug",
// "info", "warn" or "error"; "" for info) as text, one per line
// (GET /v1/agent/monitor). The caller closes the stream; closing it, or
// ending ctx, ends it. A line the agent had to drop because the reader
// was too slow is replaced by a line that says how many were dropped.
func (c *Client) Monitor(ctx context.Context, level string) (io.ReadCloser, error) {
	var q url.Values
	if level != "" {
		q = url.Values{"loglevel": {level}}
	}
	return c.Stream(ctx, "/v1/agent/monitor", q)
}
