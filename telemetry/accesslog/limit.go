package accesslog

import (
	"sync/atomic"
	"time"
)

// limiter is a token bucket of one second's worth of lines, refilled at
// rate lines per second, kept as the generic cell rate algorithm: one
// atomic "theoretical arrival time" instead of a count and a timestamp,
// so that the data path takes no lock. A line is allowed when that time,
// advanced by one interval, is at most a second ahead of now.
type limiter struct {
	interval int64 // nanoseconds per line
	burst    int64 // nanoseconds of credit: one second's worth of lines
	tat      atomic.Int64
}

func newLimiter(perSecond int) *limiter {
	// The interval rounds down to whole nanoseconds, so a rate that does
	// not divide a second refills a hair fast (by under 0.1 % up to a
	// million lines per second); the burst is exactly perSecond lines.
	interval := max(int64(time.Second)/int64(perSecond), 1)
	return &limiter{interval: interval, burst: interval * int64(perSecond)}
}

// allow reports whether one more line may be written at now, and takes
// its token if so.
func (l *limiter) allow(now time.Time) bool {
	n := now.UnixNano()
	for {
		tat := l.tat.Load()
		next := max(tat, n) + l.interval
		if next-n > l.burst {
			return false
		}
		if l.tat.CompareAndSwap(tat, next) {
			return true
		}
	}
}
