package ca

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented in docs/pki.md.
const (
	MetricIssued             = "meshwork_ca_issued_total"
	MetricIssueErrors        = "meshwork_ca_issue_errors_total"
	MetricIssueDuration      = "meshwork_ca_issue_duration_seconds"
	MetricTokensCreated      = "meshwork_ca_tokens_created_total"
	MetricRotations          = "meshwork_ca_rotations_total"
	MetricRotationPending    = "meshwork_ca_rotation_pending_nodes"
	MetricStateErrors        = "meshwork_ca_state_errors_total"
	MetricIntermediateExpiry = "meshwork_ca_intermediate_expiry_seconds"
	MetricLeafExpiry         = "meshwork_ca_leaf_expiry_seconds"
	MetricRootExpiry         = "meshwork_ca_root_expiry_seconds"
	MetricRenewals           = "meshwork_ca_renewals_total"
	MetricServicesWithheld   = "meshwork_ca_services_withheld_total"
)

// Reasons of MetricServicesWithheld.
const (
	withheldByPolicy = "policy"
	withheldByToken  = "token"
)

// serverMetrics are the embedded CA's metrics.
type serverMetrics struct {
	issued          *prometheus.CounterVec
	issueErrors     *prometheus.CounterVec
	issueDuration   *prometheus.HistogramVec
	tokens          prometheus.Counter
	rotations       prometheus.Counter
	rotationPending prometheus.Gauge
	stateErrors     prometheus.Counter
	withheld        *prometheus.CounterVec // reason: withheldByPolicy, withheldByToken
	interExpiry     prometheus.GaugeFunc
	// interNotAfter is the active intermediate's NotAfter in Unix
	// nanoseconds, 0 until one is loaded; the gauge counts down to it at
	// each scrape.
	interNotAfter atomic.Int64
	now           func() time.Time
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{now: time.Now,
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricIssued, Help: "Leaf certificates issued, by method (token, renew, local).",
		}, []string{"method"}),
		issueErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricIssueErrors, Help: "Refused or failed issuances, by method.",
		}, []string{"method"}),
		issueDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricIssueDuration, Help: "Time to authorize, sign and record one leaf, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"method"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricTokensCreated, Help: "Bootstrap tokens made on this server.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricRotations, Help: "Root rotations started on this server.",
		}),
		rotationPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricRotationPending, Help: "Nodes still holding a leaf under the old root during a rotation.",
		}),
		stateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricStateErrors, Help: "CA states that could not be loaded (malformed, wrong state key).",
		}),
		withheld: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricServicesWithheld, Help: "Service identities left out of issued leaves, by reason: policy (a ServiceIdentity document or the ServiceIdentityDefaults mode) or token (the agent token lacks service:write).",
		}, []string{"reason"}),
	}
	m.interExpiry = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricIntermediateExpiry, Help: "Seconds until the active intermediate expires; 0 until one is loaded.",
	}, func() float64 {
		na := m.interNotAfter.Load()
		if na == 0 {
			return 0
		}
		return time.Unix(0, na).Sub(m.now()).Seconds()
	})
	for _, method := range []string{"token", "renew", "local"} {
		m.issued.WithLabelValues(method)
		m.issueErrors.WithLabelValues(method)
	}
	for _, by := range []string{withheldByPolicy, withheldByToken} {
		m.withheld.WithLabelValues(by)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.issued, m.issueErrors, m.issueDuration, m.tokens, m.rotations, m.rotationPending, m.stateErrors, m.withheld, m.interExpiry} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *serverMetrics) observe(method string, start time.Time, err error) {
	if err != nil {
		m.issueErrors.WithLabelValues(method).Inc()
		return
	}
	m.issued.WithLabelValues(method).Inc()
	m.issueDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (m *serverMetrics) setState(sg *signer) {
	m.interNotAfter.Store(sg.chain[0].NotAfter.UnixNano())
}

// managerMetrics are the agent-side metrics; the expiry gauges are computed
// when scraped.
type managerMetrics struct {
	renewals *prometheus.CounterVec
	expiry   *expiryCollector
}

func newManagerMetrics(reg prometheus.Registerer, m *Manager) (*managerMetrics, error) {
	mm := &managerMetrics{
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRenewals, Help: "Leaf certificates obtained by this agent, by result (ok, error).",
		}, []string{"result"}),
		expiry: &expiryCollector{
			m:    m,
			leaf: prometheus.NewDesc(MetricLeafExpiry, "Seconds until this agent's leaf certificate expires.", nil, nil),
			root: prometheus.NewDesc(MetricRootExpiry, "Seconds until each root of the trust bundle expires.", []string{"root"}, nil),
		},
	}
	mm.renewals.WithLabelValues("ok")
	mm.renewals.WithLabelValues("error")
	if reg != nil {
		for _, c := range []prometheus.Collector{mm.renewals, mm.expiry} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return mm, nil
}

type expiryCollector struct {
	m          *Manager
	leaf, root *prometheus.Desc
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.leaf
	ch <- c.root
}

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.m.now()
	if l := c.m.cur.Load(); l != nil {
		ch <- prometheus.MustNewConstMetric(c.leaf, prometheus.GaugeValue, l.leaf.NotAfter.Sub(now).Seconds())
	}
	if b := c.m.bundle.Load(); b != nil {
		for _, r := range b.Roots {
			ch <- prometheus.MustNewConstMetric(c.root, prometheus.GaugeValue, r.NotAfter.Sub(now).Seconds(), Fingerprint(r)[:16])
		}
	}
}
