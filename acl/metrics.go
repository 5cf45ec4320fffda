package acl

import "github.com/prometheus/client_golang/prometheus"

// Metric names.
const (
	// MetricResolutions counts token resolutions by result: hit (from the
	// cache), miss (compiled from the store), not_found, expired,
	// malformed, store_error.
	MetricResolutions = "meshwork_acl_resolutions_total"
	// MetricCachedTokens is the number of compiled authorizers cached.
	MetricCachedTokens = "meshwork_acl_cached_tokens"
	// MetricCacheInvalidations counts the times a change of the store
	// dropped the cache.
	MetricCacheInvalidations = "meshwork_acl_cache_invalidations_total"
)

// metrics are a Resolver's. The counters of each result are bound once, so
// that counting costs one atomic add on the hot path.
type metrics struct {
	hit, miss, notFound, expired, malformed, storeErrors prometheus.Counter

	cached        prometheus.Gauge
	invalidations prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	resolutions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricResolutions, Help: "ACL token resolutions, by result (hit, miss, not_found, expired, malformed, store_error).",
	}, []string{"result"})
	m := &metrics{
		hit:         resolutions.WithLabelValues("hit"),
		miss:        resolutions.WithLabelValues("miss"),
		notFound:    resolutions.WithLabelValues("not_found"),
		expired:     resolutions.WithLabelValues("expired"),
		malformed:   resolutions.WithLabelValues("malformed"),
		storeErrors: resolutions.WithLabelValues("store_error"),
		cached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricCachedTokens, Help: "Compiled ACL authorizers in the resolver's cache.",
		}),
		invalidations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricCacheInvalidations, Help: "Times a change of the ACL state dropped the resolver's cache.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{resolutions, m.cached, m.invalidations} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
