package raftstore

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/policy"
)

// Metric names, as documented in docs/policy.md and checked by a test.
const (
	MetricApplies          = "meshwork_raft_applies_total"
	MetricApplyDuration    = "meshwork_raft_apply_duration_seconds"
	MetricApplyBatch       = "meshwork_raft_apply_batch_size"
	MetricLeaderChanges    = "meshwork_raft_leader_changes_total"
	MetricIsLeader         = "meshwork_raft_is_leader"
	MetricLastContact      = "meshwork_raft_last_contact_seconds"
	MetricFSMDocuments     = "meshwork_raft_fsm_documents"
	MetricPeers            = "meshwork_raft_peers"
	MetricPolicyIndex      = "meshwork_policy_index"
	MetricPolicyStaleness  = "meshwork_policy_staleness_seconds"
	MetricPolicyDocuments  = "meshwork_policy_documents"
	MetricPolicyUpdates    = "meshwork_policy_updates_total"
	MetricRPCRequests      = "meshwork_raft_rpc_requests_total"
	MetricAutopilotChanges = "meshwork_raft_autopilot_changes_total"
)

type metrics struct {
	applies          *prometheus.CounterVec
	applyDuration    prometheus.Histogram
	applyBatch       prometheus.Histogram
	leaderChanges    prometheus.Counter
	isLeader         prometheus.Gauge
	lastContact      prometheus.Gauge
	fsmDocs          *prometheus.GaugeVec
	peers            *prometheus.GaugeVec
	policyIndex      prometheus.Gauge
	policyStaleness  prometheus.GaugeFunc
	policyDocs       *prometheus.GaugeVec
	policyUpdates    prometheus.Counter
	rpcRequests      *prometheus.CounterVec
	autopilotChanges *prometheus.CounterVec
}

// newMetrics registers the metrics in reg. staleness is read on scrape.
func newMetrics(reg prometheus.Registerer, staleness func() float64) *metrics {
	m := &metrics{
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricApplies,
			Help: "Writes (transactions) applied through this agent, by result: ok, conflict, invalid, unknown (may or may not be applied), error."}, []string{"result"}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricApplyDuration,
			Help:    "Time from a write's submission on this agent until it is committed and applied.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		applyBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricApplyBatch,
			Help: "Transactions grouped into one Raft log entry by the leader.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricLeaderChanges,
			Help: "Times this server gained or lost the leadership."}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricIsLeader, Help: "1 when this server is the Raft leader."}),
		lastContact: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricLastContact,
			Help: "Seconds since this follower last heard from the leader (0 on the leader)."}),
		fsmDocs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricFSMDocuments,
			Help: "Policy documents in this server's state machine, by kind."}, []string{"kind"}),
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricPeers,
			Help: "Servers in the Raft configuration, by suffrage (voter, nonvoter)."}, []string{"suffrage"}),
		policyIndex: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricPolicyIndex,
			Help: "Index of the policy this agent enforces."}),
		policyStaleness: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricPolicyStaleness,
			Help: "Seconds since this agent last heard from a server about policy."}, staleness),
		policyDocs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricPolicyDocuments,
			Help: "Policy documents this agent enforces, by kind."}, []string{"kind"}),
		policyUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricPolicyUpdates,
			Help: "Policy sets this agent installed."}),
		rpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRPCRequests,
			Help: "RPC requests this server answered, by route and code."}, []string{"route", "code"}),
		autopilotChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricAutopilotChanges,
			Help: "Configuration changes made by autopilot, by action: add, promote, remove."}, []string{"action"}),
	}
	if reg != nil {
		reg.MustRegister(m.applies, m.applyDuration, m.applyBatch, m.leaderChanges, m.isLeader, m.lastContact,
			m.fsmDocs, m.peers, m.policyIndex, m.policyStaleness, m.policyDocs, m.policyUpdates, m.rpcRequests, m.autopilotChanges)
	}
	return m
}

func (m *metrics) setFSMDocs(c map[policy.Kind]int) {
	for k, n := range c {
		m.fsmDocs.WithLabelValues(string(k)).Set(float64(n))
	}
}

func (m *metrics) setPolicy(s *policy.Set) {
	m.policyIndex.Set(float64(s.Index()))
	for k, n := range s.Counts() {
		m.policyDocs.WithLabelValues(string(k)).Set(float64(n))
	}
	m.policyUpdates.Inc()
}
