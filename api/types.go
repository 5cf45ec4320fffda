package api

// Health values of a check or a service instance, from best to worst. They
// are the same strings as catalog.Health, which this package does not import
// so that tools can use the client alone.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
)

// Member statuses, as gossip reports them.
const (
	MemberAlive   = "alive"
	MemberSuspect = "suspect"
	MemberFailed  = "failed"
	MemberLeft    = "left"
)

// Sources of a local service.
const (
	// SourceConfig marks a service read from the agent's configuration. A
	// reload (SIGHUP) replaces all of them.
	SourceConfig = "config"
	// SourceAPI marks a service registered through the HTTP API. It is kept
	// in the data directory and survives restarts and reloads.
	SourceAPI = "api"
)

// ServiceDefinition is a service as an operator declares it: in a config
// file (YAML), in a file given to `meshwork services register`, or in the
// body of PUT /v1/agent/service/register. Call Validate before use and
// Normalize to fill in the defaults.
type ServiceDefinition struct {
	// Name is the service name used in DNS and policy. Required.
	Name string `json:"name" yaml:"name"`
	// ID is unique on this node. Default: Name.
	ID string `json:"id,omitempty" yaml:"id,omitempty"`
	// Address is an IP address that overrides the node's. Default: the node
	// address.
	Address string `json:"address,omitempty" yaml:"address,omitempty"`
	// Port is the main port. Default: 0, no port.
	Port int `json:"port,omitempty" yaml:"port,omitempty"`
	// Ports are extra named ports. Default: none.
	Ports []ServicePort `json:"ports,omitempty" yaml:"ports,omitempty"`
	// Tags select subsets of instances (DNS <tag>.<name>.service, splits).
	Tags []string `json:"tags,omitempty" yaml:"tags,omitempty"`
	// Meta holds small key/value attributes gossiped with the instance.
	Meta map[string]string `json:"meta,omitempty" yaml:"meta,omitempty"`
	// Checks decide the instance's health. With none, it is passing.
	Checks []CheckDefinition `json:"checks,omitempty" yaml:"checks,omitempty"`
	// Check is a convenience for a single check; Normalize moves it to the
	// front of Checks.
	Check *CheckDefinition `json:"check,omitempty" yaml:"check,omitempty"`
	// Upstreams are services this one calls through a local listener of the
	// data plane. They stay on this node; they are not gossiped.
	Upstreams []Upstream `json:"upstreams,omitempty" yaml:"upstreams,omitempty"`
	// User is the unix user (name or numeric uid) the service runs as. The
	// data plane maps a caller's uid to this service with it. Default: none.
	User string `json:"user,omitempty" yaml:"user,omitempty"`
}

// ServicePort is an extra named port of a service.
type ServicePort struct {
	Name string `json:"name" yaml:"name"`
	Port int    `json:"port" yaml:"port"`
}

// Upstream is a service that a local service calls through the data plane.
type Upstream struct {
	// Service is the name of the service called. Required.
	Service string `json:"service" yaml:"service"`
	// LocalBind is the "ip:port" where the agent listens for the caller.
	// Required.
	LocalBind string `json:"local_bind" yaml:"local_bind"`
	// Port selects one of the upstream's ports. Default: 0, its main port.
	Port int `json:"port,omitempty" yaml:"port,omitempty"`
}

// CheckDefinition declares one health check. Exactly one of HTTP, TCP and TTL
// is set.
type CheckDefinition struct {
	// ID is unique on this node. Default: "service:<service id>", or
	// "service:<service id>:<n>" (n from 1) when the service has several.
	ID string `json:"id,omitempty" yaml:"id,omitempty"`
	// Name is for humans. Default: "Service '<name>' check".
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
	// HTTP is a URL probed every Interval: 2xx passes, 429 warns, anything
	// else (or no answer within Timeout) is critical.
	HTTP string `json:"http,omitempty" yaml:"http,omitempty"`
	// Method of the HTTP probe. Default: GET.
	Method string `json:"method,omitempty" yaml:"method,omitempty"`
	// Header is added to the HTTP probe. Default: none.
	Header map[string][]string `json:"header,omitempty" yaml:"header,omitempty"`
	// TCP is a "host:port" that must accept a connection every Interval.
	TCP string `json:"tcp,omitempty" yaml:"tcp,omitempty"`
	// TTL makes a check that the service updates itself through the API
	// (PUT /v1/agent/check/pass/<id>); without an update within TTL it turns
	// critical.
	TTL Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
	// Interval between probes of an HTTP or TCP check. Required for them.
	Interval Duration `json:"interval,omitempty" yaml:"interval,omitempty"`
	// Timeout of one probe. Default: 10s.
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// DeregisterCriticalAfter removes the service from this node once the
	// check has been critical for that long. Default: 0, never.
	DeregisterCriticalAfter Duration `json:"deregister_critical_after,omitempty" yaml:"deregister_critical_after,omitempty"`
	// Status is the initial status. Default: critical, so that an instance
	// takes no traffic before its first probe passes.
	Status string `json:"status,omitempty" yaml:"status,omitempty"`
}

// Check kinds, as CheckStatus.Type reports them.
const (
	CheckHTTP = "http"
	CheckTCP  = "tcp"
	CheckTTL  = "ttl"
)

// Kind returns CheckHTTP, CheckTCP or CheckTTL, or "" when none is set.
func (c *CheckDefinition) Kind() string {
	switch {
	case c.HTTP != "":
		return CheckHTTP
	case c.TCP != "":
		return CheckTCP
	case c.TTL != 0:
		return CheckTTL
	}
	return ""
}

// Self is the answer of GET /v1/agent/self: who this agent is.
type Self struct {
	Node       string            `json:"node"`
	Addr       string            `json:"addr"`
	TunnelPort int               `json:"tunnel_port,omitempty"`
	Server     bool              `json:"server"`
	Meta       map[string]string `json:"meta,omitempty"`
	// Build names the agent's binary.
	Build Build `json:"build"`
	// CatalogIndex is the index of the agent's current catalog snapshot.
	CatalogIndex uint64 `json:"catalog_index"`
	// Services is the number of services registered on this node.
	Services int `json:"services"`
}

// Build names a binary: what `meshwork version` prints, and an agent reports
// in Self.
type Build struct {
	// Version is a semantic version: x.y.z for a release, 0.0.0-dev+<commit>
	// or x.y.z-dev+<commit> for a build between releases.
	Version string `json:"version"`
	// Commit is the git commit the binary was built from (12 hex digits),
	// or "unknown".
	Commit string `json:"commit"`
}

// Member is a node as this agent's gossip layer sees it
// (GET /v1/agent/members).
type Member struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// Port is the gossip port; 0 when unknown.
	Port int `json:"port"`
	// Status is one of MemberAlive, MemberSuspect, MemberFailed, MemberLeft.
	Status string            `json:"status"`
	Server bool              `json:"server"`
	Meta   map[string]string `json:"meta,omitempty"`
	// TunnelPort is the UDP port of the node's tunnel listener; 0 when it
	// has none, or its record has not arrived.
	TunnelPort int `json:"tunnel_port,omitempty"`
	// Services is the number of services in the node's record.
	Services int `json:"services"`
	// RecordVersion is the version of the node's catalog record this agent
	// holds (it grows with every change the node publishes); 0 for none.
	RecordVersion uint64 `json:"record_version,omitempty"`
}

// AgentService is a service registered on this agent, with its checks
// (GET /v1/agent/services).
type AgentService struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Address   string            `json:"address,omitempty"`
	Port      int               `json:"port,omitempty"`
	Ports     []ServicePort     `json:"ports,omitempty"`
	Tags      []string          `json:"tags,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Upstreams []Upstream        `json:"upstreams,omitempty"`
	User      string            `json:"user,omitempty"`
	// Source is SourceConfig or SourceAPI.
	Source string `json:"source"`
	// Health is the worst status of Checks; passing when there are none.
	Health string        `json:"health"`
	Checks []CheckStatus `json:"checks"`
}

// CheckStatus is the current state of one check run by this agent
// (GET /v1/agent/checks).
type CheckStatus struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	ServiceID   string `json:"service_id"`
	ServiceName string `json:"service_name"`
	// Type is CheckHTTP, CheckTCP or CheckTTL.
	Type   string `json:"type"`
	Status string `json:"status"`
	// Output is the last probe's result, or the note of the last TTL update.
	Output string `json:"output"`
	// Since is when Status last changed, in RFC 3339.
	Since string `json:"since,omitempty"`
}

// CatalogServiceSummary is one service name in the catalog
// (GET /v1/catalog/services).
type CatalogServiceSummary struct {
	Name string `json:"name"`
	// Tags is the union of the instances' tags, sorted.
	Tags []string `json:"tags,omitempty"`
	// Instances counts every instance; Passing those that take traffic.
	Instances int `json:"instances"`
	Passing   int `json:"passing"`
}

// Node is one node of the catalog (GET /v1/catalog/nodes, and inside
// HealthServiceEntry).
type Node struct {
	Name       string            `json:"name"`
	Addr       string            `json:"addr"`
	TunnelPort int               `json:"tunnel_port,omitempty"`
	Server     bool              `json:"server"`
	Status     string            `json:"status"`
	Meta       map[string]string `json:"meta,omitempty"`
	// Services is the number of services the node registers.
	Services int `json:"services"`
}

// CatalogServiceEntry is one instance of a service
// (GET /v1/catalog/service/<name>).
type CatalogServiceEntry struct {
	Node       string `json:"node"`
	NodeAddr   string `json:"node_addr"`
	NodeStatus string `json:"node_status"`
	// Address is where the instance is reached: ServiceAddress when set,
	// else NodeAddr.
	Address        string            `json:"address"`
	ServiceID      string            `json:"service_id"`
	ServiceName    string            `json:"service_name"`
	ServiceAddress string            `json:"service_address,omitempty"`
	Port           int               `json:"port,omitempty"`
	Ports          []ServicePort     `json:"ports,omitempty"`
	Tags           []string          `json:"tags,omitempty"`
	Meta           map[string]string `json:"meta,omitempty"`
	// Health is the service's health as its node reports it.
	Health string `json:"health"`
	// Passing is true when Health is passing and the node is reachable.
	Passing bool `json:"passing"`
}

// HealthServiceEntry is one instance with the health that decides whether it
// takes traffic (GET /v1/health/service/<name>).
type HealthServiceEntry struct {
	Node    Node            `json:"node"`
	Service ServiceInstance `json:"service"`
	// Status is the effective status: the service's health, or critical
	// when its node is failed or has left.
	Status string `json:"status"`
}

// ServiceInstance is the service part of a HealthServiceEntry.
type ServiceInstance struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Address string            `json:"address"`
	Port    int               `json:"port,omitempty"`
	Ports   []ServicePort     `json:"ports,omitempty"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	// Health is the aggregate of the instance's checks on its node.
	Health string `json:"health"`
}

// CheckUpdate is the optional body of PUT /v1/agent/check/update/<id>.
type CheckUpdate struct {
	// Status is passing, warning or critical.
	Status string `json:"status"`
	// Output is a note shown with the check.
	Output string `json:"output,omitempty"`
}
