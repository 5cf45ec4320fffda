package agent

import (
	"net"
	"net/http"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/readiness"
	"github.com/meshwork/meshwork/agent/telemetryhttp"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// buildReadiness makes the readiness checks from the state the agent
// already keeps (docs/observability-health.md; a restored catalog counts
// as joined, see docs/design.md), serves them on the API as
// GET /v1/agent/ready, with the rule of the agent's other self reads, and
// publishes them as gauges.
func (a *Agent) buildReadiness() error {
	// A server that bootstraps alone is the whole cluster; --dev is one.
	alone := a.cfg.Server && a.cfg.BootstrapExpect == 1
	a.ready = readiness.New(a.deps.Clock,
		readiness.Gossip(a.aliveOthers, alone, a.catalogState.state),
		readiness.Catalog(a.catalogState.state, alone),
		readiness.Certificate(func() (time.Time, time.Time, error) {
			leaf, err := a.ca.Manager().Leaf()
			return leaf.NotBefore, leaf.NotAfter, err
		}),
		readiness.Policy(a.raft.Replica().LastContact),
	)
	if err := a.ready.Register(a.reg); err != nil {
		return err
	}
	return a.http.Mount("GET /v1/agent/ready", acl.Require(acl.ResourceAgent, "", acl.Read),
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			// 200 whatever the answer: the API's error answers have
			// one shape, and a readiness that says "no" is not an
			// error of the call. /readyz is the probe that answers 503.
			httpjson.Write(w, http.StatusOK, a.ready.Report())
		}))
}

// aliveOthers counts the members other than this node that gossip sees
// alive.
func (a *Agent) aliveOthers() int {
	n := 0
	for _, m := range a.gossip.Members() {
		if m.Name != a.cfg.Node && m.Status == catalog.StatusAlive {
			n++
		}
	}
	return n
}

// buildTelemetryListener makes the telemetry listener when telemetry.listen
// (or Deps.TelemetryListener) asks for one. It starts last, so that a
// probe that reaches it finds every component started.
func (a *Agent) buildTelemetryListener() error {
	if a.cfg.Telemetry.Listen == "" && a.deps.TelemetryListener == nil {
		return nil
	}
	s, err := telemetryhttp.New(telemetryhttp.Config{Addr: a.cfg.Telemetry.Listen}, telemetryhttp.Deps{
		Listener: a.deps.TelemetryListener,
		Listen: func(network, addr string) (net.Listener, error) {
			return a.deps.Sockets.Listener("telemetry", network, addr)
		},
		Gatherer: a.reg,
		Ready:    a.ready.Report,
		Logger:   a.logger("telemetry"),
	})
	if err != nil {
		return err
	}
	a.telemetry = s
	a.add("telemetry", s.Start, s.Close)
	return nil
}

// Ready reports whether the agent is ready to carry traffic, check by check.
func (a *Agent) Ready() api.Readiness { return a.ready.Report() }

// TelemetryAddr is where the telemetry listener listens, once started; ""
// when it is off.
func (a *Agent) TelemetryAddr() string {
	if a.telemetry == nil {
		return ""
	}
	if addr := a.telemetry.Addr(); addr != nil {
		return addr.String()
	}
	return ""
}
