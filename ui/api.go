package ui

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// The UI's endpoints.
const (
	APIPathTopology = "/v1/ui/topology"
	APIPathConfig   = "/v1/ui/config"
)

// Settings answers GET /v1/ui/config: what the pages must know before
// they call anything else.
type Settings struct {
	// ACLEnabled: the pages ask for a token before they read anything.
	ACLEnabled bool `json:"acl_enabled"`
	// MetricsProvider is ProviderAgents or ProviderPrometheus; "" when the
	// topology endpoint is not mounted.
	MetricsProvider string `json:"metrics_provider"`
}

// API is what RegisterAPI mounts.
type API struct {
	// Topology reads the topology's numbers; nil: the endpoint is not
	// mounted, and the topology page says so.
	Topology Provider
	// ProviderName is ProviderAgents or ProviderPrometheus.
	ProviderName string
	// ACLEnabled reports whether the API enforces ACLs. Default: false.
	ACLEnabled func() bool
}

// topologyTimeout bounds one answer of the topology endpoint, above the
// providers' per-read timeouts.
const topologyTimeout = 5 * time.Second

// RegisterAPI mounts the UI with mount (the agent's HTTP API):
//
//	GET /ui/...          the embedded assets          open: no data, the pages read /v1 with the user's token
//	GET /v1/ui/config    Settings                     open: whether to ask for a token
//	GET /v1/ui/topology  Topology                     in handler: filtered by service:read and node:read
func RegisterAPI(a API, mount acl.MountFunc) error {
	settings := Settings{MetricsProvider: a.ProviderName}
	errs := []error{
		mount("GET "+PathPrefix, acl.Open("the UI's static files, which hold no data: its pages call the API with the user's token"), AssetHandler()),
		mount("GET "+APIPathConfig, acl.Open("whether ACLs are enabled, which any call tells, so that the UI asks for a token first"),
			http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				out := settings
				out.ACLEnabled = a.ACLEnabled != nil && a.ACLEnabled()
				httpjson.Write(w, http.StatusOK, out)
			})),
	}
	if a.Topology != nil {
		errs = append(errs, mount("GET "+APIPathTopology,
			acl.CheckedInHandler("service:read on both services of each edge, node:read on each agent asked (agent:read for a Prometheus source): the lists are filtered"),
			topologyHandler(a.Topology)))
	} else {
		settings.MetricsProvider = ""
	}
	return errors.Join(errs...)
}

// topologyHandler answers the topology, filtered to what the token may read.
func topologyHandler(p Provider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), topologyTimeout)
		defer cancel()
		top, err := p.Read(ctx)
		if err != nil {
			httpjson.Error(w, http.StatusInternalServerError, err)
			return
		}
		httpjson.Write(w, http.StatusOK, Filter(top, acl.FromContext(r.Context())))
	})
}

// Filter keeps what authz may read: the edges whose two services it may
// read, the agents whose nodes it may read, and a Prometheus source with
// agent:read.
func Filter(top Topology, authz *acl.Authorizer) Topology {
	edges := make([]Edge, 0, len(top.Edges))
	for _, e := range top.Edges {
		if authz.Allowed(acl.ResourceService, e.Source, acl.Read) && authz.Allowed(acl.ResourceService, e.Destination, acl.Read) {
			edges = append(edges, e)
		}
	}
	sources := make([]Source, 0, len(top.Sources))
	for _, s := range top.Sources {
		ok := authz.Allowed(acl.ResourceAgent, "", acl.Read)
		if s.Node != "" {
			ok = authz.Allowed(acl.ResourceNode, s.Node, acl.Read)
		}
		if ok {
			sources = append(sources, s)
		}
	}
	top.Edges, top.Sources = edges, sources
	return top
}
