package balance

import (
	"math/bits"
	"sync"
	"time"
)

// LatencyQuantiles estimates quantiles of an instance's recent request
// latency, for hedging: a log-linear histogram (four buckets per power of
// two of microseconds, so a quantile is known within 25 %) whose counts
// halve every HalfLife, so that the estimate follows the instance as it
// speeds up or slows down. The zero value is ready; safe for concurrent
// use. Observe costs a lock and an increment.
type LatencyQuantiles struct {
	mu     sync.Mutex
	counts [quantileBuckets]uint32
	total  uint32
	halved time.Duration // clock time of the last halving
}

// Estimator settings.
const (
	// HalfLife is how long an observation takes to weigh half as much;
	// 10 s, the time constant of the balancer's latency estimate.
	HalfLife = 10 * time.Second
	// MinQuantileSamples is how many (decayed) observations a quantile
	// needs: with fewer the tail is a guess, and no hedge is sent.
	MinQuantileSamples = 20

	subBuckets      = 4
	quantileBuckets = 64 * subBuckets
)

// bucketOf maps a latency to its bucket: the power of two of its
// microseconds and two bits below it.
func bucketOf(d time.Duration) int {
	us := uint64(max(d/time.Microsecond, 0))
	if us < subBuckets {
		return int(us)
	}
	e := bits.Len64(us) - 1 // us is in [2^e, 2^(e+1))
	sub := (us >> (e - 2)) & (subBuckets - 1)
	return e*subBuckets + int(sub)
}

// bucketTop is the largest latency of bucket i, which a quantile reports:
// a hedge sent a little late rather than early.
func bucketTop(i int) time.Duration {
	e, sub := i/subBuckets, uint64(i%subBuckets)
	if e < 2 {
		return time.Duration(min(i, subBuckets-1)+1) * time.Microsecond
	}
	top := uint64(1)<<e + (sub+1)<<(e-2) // exclusive upper bound, µs
	return time.Duration(top) * time.Microsecond
}

// Observe adds a latency measured at clock time now.
func (q *LatencyQuantiles) Observe(now, d time.Duration) {
	q.mu.Lock()
	q.decay(now)
	i := bucketOf(d)
	if q.counts[i] < 1<<31 {
		q.counts[i]++
		q.total++
	}
	q.mu.Unlock()
}

// decay halves the counts once for each HalfLife since the last halving;
// q.mu is held.
func (q *LatencyQuantiles) decay(now time.Duration) {
	if q.halved == 0 || now < q.halved {
		q.halved = now
		return
	}
	n := int((now - q.halved) / HalfLife)
	if n == 0 {
		return
	}
	q.halved += time.Duration(n) * HalfLife
	if n >= 32 {
		q.counts, q.total = [quantileBuckets]uint32{}, 0
		return
	}
	q.total = 0
	for i, c := range q.counts {
		c >>= n
		q.counts[i] = c
		q.total += c
	}
}

// Quantile returns the latency below which a share p (0 to 1) of the
// recent observations fall, read at clock time now. ok is false with
// fewer than MinQuantileSamples of them.
func (q *LatencyQuantiles) Quantile(now time.Duration, p float64) (d time.Duration, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.decay(now)
	if q.total < MinQuantileSamples {
		return 0, false
	}
	rank := uint32(p*float64(q.total) + 0.5)
	rank = min(max(rank, 1), q.total)
	var seen uint32
	for i, c := range q.counts {
		seen += c
		if seen >= rank {
			return bucketTop(i), true
		}
	}
	return bucketTop(quantileBuckets - 1), true // unreachable: seen reaches total
}

// ObserveLatency feeds a request's latency (request written to answer
// head) to the endpoint's quantile estimate.
func (e *Endpoint) ObserveLatency(d time.Duration) { e.latency.Observe(e.b.now(), d) }

// P95 is the endpoint's 95th percentile request latency; ok is false
// until it has seen enough requests.
func (e *Endpoint) P95() (time.Duration, bool) { return e.latency.Quantile(e.b.now(), 0.95) }
