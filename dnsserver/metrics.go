package dnsserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, as documented in docs/dns.md.
const (
	MetricQueries         = "meshwork_dns_queries_total"
	MetricQueryDuration   = "meshwork_dns_query_duration_seconds"
	MetricTruncated       = "meshwork_dns_truncated_responses_total"
	MetricDropped         = "meshwork_dns_dropped_queries_total"
	MetricWriteErrors     = "meshwork_dns_write_errors_total"
	MetricForwardErrors   = "meshwork_dns_forward_errors_total"
	MetricForwardOverload = "meshwork_dns_forward_overload_total"
	MetricTCPRejected     = "meshwork_dns_tcp_rejected_connections_total"
)

// source labels of the duration histogram.
const (
	srcLocal   = 0
	srcForward = 1
)

// The qtype and rcode labels take a few known values, so that a client
// sending random types cannot grow the series without bound.
var (
	qtypeLabels = [...]string{"A", "AAAA", "SRV", "PTR", "SOA", "NS", "ANY", "other"}
	rcodeLabels = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other"}
)

func qtypeIndex(t uint16) int {
	switch t {
	case typeA:
		return 0
	case typeAAAA:
		return 1
	case typeSRV:
		return 2
	case typePTR:
		return 3
	case typeSOA:
		return 4
	case typeNS:
		return 5
	case typeANY:
		return 6
	}
	return 7
}

func rcodeIndex(r int) int {
	switch {
	case r >= 0 && r <= rcodeRef:
		return r
	case r == rcodeBadVers:
		return 6
	}
	return 7
}

type metrics struct {
	// queries is resolved once per label pair so that counting a query is
	// one atomic add, with no label hashing or allocation.
	queries         [len(qtypeLabels)][len(rcodeLabels)]prometheus.Counter
	duration        [2]prometheus.Observer
	truncated       prometheus.Counter
	dropped         prometheus.Counter
	writeErrors     prometheus.Counter
	forwardErrors   *prometheus.CounterVec
	forwardOverload prometheus.Counter
	tcpRejected     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, recursors []string) (*metrics, error) {
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricQueries,
		Help: "DNS queries answered, by query type and response code.",
	}, []string{"qtype", "rcode"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: MetricQueryDuration,
		Help: "Time from reading a query to writing its response; source is local (answered from the catalog) or forward (sent to a recursor).",
		// Local answers take microseconds, forwarded ones milliseconds.
		Buckets: []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5},
	}, []string{"source"})
	m := &metrics{
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricTruncated,
			Help: "UDP responses sent with the TC bit because the answer did not fit.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricDropped,
			Help: "Packets not answered: shorter than a DNS header, or responses rather than queries.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricWriteErrors,
			Help: "Responses that could not be written to the client.",
		}),
		forwardErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricForwardErrors,
			Help: "Forwarding attempts that failed, timed out, or got SERVFAIL or REFUSED, by recursor.",
		}, []string{"recursor"}),
		forwardOverload: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricForwardOverload,
			Help: "Queries answered SERVFAIL at once because MaxForwards queries were already being forwarded.",
		}),
		tcpRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricTCPRejected,
			Help: "TCP connections closed at once because MaxTCPConns were open.",
		}),
	}
	for _, c := range []prometheus.Collector{queries, duration, m.truncated, m.dropped, m.writeErrors, m.forwardErrors, m.forwardOverload, m.tcpRejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for i, qt := range qtypeLabels {
		for j, rc := range rcodeLabels {
			m.queries[i][j] = queries.WithLabelValues(qt, rc)
		}
	}
	m.duration[srcLocal] = duration.WithLabelValues("local")
	m.duration[srcForward] = duration.WithLabelValues("forward")
	for _, r := range recursors {
		m.forwardErrors.WithLabelValues(r) // export zeros from the start
	}
	return m, nil
}

// observe counts one answered query and its duration since start.
func (m *metrics) observe(qtype uint16, rcode int, src int, start time.Time) {
	m.queries[qtypeIndex(qtype)][rcodeIndex(rcode)].Inc()
	m.duration[src].Observe(time.Since(start).Seconds())
}
