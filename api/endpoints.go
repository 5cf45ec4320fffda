package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// QueryOptions are the optional parameters of the catalog and health reads.
type QueryOptions struct {
	// Index makes the read blocking: the agent answers once its catalog index
	// is above Index, or when Wait has passed. 0 answers at once.
	Index uint64
	// Wait bounds a blocking read. Default (0): the agent's default, 5m; the
	// agent caps it at 10m.
	Wait time.Duration
	// Tag keeps only instances carrying this tag (service reads only).
	Tag string
}

func (o *QueryOptions) values() url.Values {
	v := url.Values{}
	if o == nil {
		return v
	}
	if o.Index > 0 {
		v.Set("index", strconv.FormatUint(o.Index, 10))
	}
	if o.Wait > 0 {
		v.Set("wait", o.Wait.String())
	}
	if o.Tag != "" {
		v.Set("tag", o.Tag)
	}
	return v
}

// Self returns who the agent is.
func (c *Client) Self(ctx context.Context) (*Self, error) {
	var out Self
	if _, err := c.Do(ctx, http.MethodGet, "/v1/agent/self", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Members returns the nodes the agent's gossip layer knows, sorted by name.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	_, err := c.Do(ctx, http.MethodGet, "/v1/agent/members", nil, nil, &out)
	return out, err
}

// AgentServices returns the services registered on the agent, sorted by ID.
func (c *Client) AgentServices(ctx context.Context) ([]AgentService, error) {
	var out []AgentService
	_, err := c.Do(ctx, http.MethodGet, "/v1/agent/services", nil, nil, &out)
	return out, err
}

// AgentService returns one service registered on the agent. An unknown id is
// an *Error with Status 404.
func (c *Client) AgentService(ctx context.Context, id string) (*AgentService, error) {
	var out AgentService
	if _, err := c.Do(ctx, http.MethodGet, "/v1/agent/service/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AgentChecks returns the checks the agent runs, sorted by ID.
func (c *Client) AgentChecks(ctx context.Context) ([]CheckStatus, error) {
	var out []CheckStatus
	_, err := c.Do(ctx, http.MethodGet, "/v1/agent/checks", nil, nil, &out)
	return out, err
}

// RegisterService registers def on the agent, replacing any service with the
// same ID. The agent keeps it across restarts.
func (c *Client) RegisterService(ctx context.Context, def ServiceDefinition) error {
	_, err := c.Do(ctx, http.MethodPut, "/v1/agent/service/register", nil, def, nil)
	return err
}

// DeregisterService removes the service with this ID from the agent.
func (c *Client) DeregisterService(ctx context.Context, id string) error {
	_, err := c.Do(ctx, http.MethodPut, "/v1/agent/service/deregister/"+url.PathEscape(id), nil, nil, nil)
	return err
}

// PassTTL marks a TTL check passing, with an optional note.
func (c *Client) PassTTL(ctx context.Context, checkID, note string) error {
	return c.updateTTL(ctx, "pass", checkID, note)
}

// WarnTTL marks a TTL check warning, with an optional note.
func (c *Client) WarnTTL(ctx context.Context, checkID, note string) error {
	return c.updateTTL(ctx, "warn", checkID, note)
}

// FailTTL marks a TTL check critical, with an optional note.
func (c *Client) FailTTL(ctx context.Context, checkID, note string) error {
	return c.updateTTL(ctx, "fail", checkID, note)
}

func (c *Client) updateTTL(ctx context.Context, verb, checkID, note string) error {
	q := url.Values{}
	if note != "" {
		q.Set("note", note)
	}
	_, err := c.Do(ctx, http.MethodPut, "/v1/agent/check/"+verb+"/"+url.PathEscape(checkID), q, nil, nil)
	return err
}

// CatalogServices returns every service name in the catalog, sorted.
func (c *Client) CatalogServices(ctx context.Context, opts *QueryOptions) ([]CatalogServiceSummary, QueryMeta, error) {
	var out []CatalogServiceSummary
	meta, err := c.Do(ctx, http.MethodGet, "/v1/catalog/services", opts.values(), nil, &out)
	return out, meta, err
}

// CatalogNodes returns every node in the catalog, sorted by name.
func (c *Client) CatalogNodes(ctx context.Context, opts *QueryOptions) ([]Node, QueryMeta, error) {
	var out []Node
	meta, err := c.Do(ctx, http.MethodGet, "/v1/catalog/nodes", opts.values(), nil, &out)
	return out, meta, err
}

// CatalogService returns every instance of a service, healthy or not. An
// unknown name returns no entries and no error.
func (c *Client) CatalogService(ctx context.Context, name string, opts *QueryOptions) ([]CatalogServiceEntry, QueryMeta, error) {
	var out []CatalogServiceEntry
	meta, err := c.Do(ctx, http.MethodGet, "/v1/catalog/service/"+url.PathEscape(name), opts.values(), nil, &out)
	return out, meta, err
}

// HealthService returns the instances of a service with their effective
// status; with passingOnly, only those that take traffic.
func (c *Client) HealthService(ctx context.Context, name string, passingOnly bool, opts *QueryOptions) ([]HealthServiceEntry, QueryMeta, error) {
	q := opts.values()
	if passingOnly {
		q.Set("passing", "1")
	}
	var out []HealthServiceEntry
	meta, err := c.Do(ctx, http.MethodGet, "/v1/health/service/"+url.PathEscape(name), q, nil, &out)
	return out, meta, err
}
