// Package histogram holds the latency histograms the benchmarks read from
// their load generators (fortio's buckets, ghz's single calls) and the
// percentiles they report.
package histogram

import (
	"cmp"
	"slices"
	"time"
)

// Bucket is one bucket of a latency histogram, in seconds, as fortio's
// JSON writes it. A single measured latency is a bucket whose Start and
// End are equal.
type Bucket struct {
	Start, End float64
	Count      int64
}

// Percentile is the q-th percentile of the buckets, pooled, interpolated
// linearly inside the bucket it falls in, as fortio does; exact for single
// values; 0 for no bucket.
func Percentile(bs []Bucket, q float64) time.Duration {
	bs = slices.Clone(bs)
	slices.SortFunc(bs, func(a, b Bucket) int {
		if c := cmp.Compare(a.Start, b.Start); c != 0 {
			return c
		}
		return cmp.Compare(a.End, b.End)
	})
	var total int64
	for _, b := range bs {
		total += b.Count
	}
	if total == 0 {
		return 0
	}
	want := q / 100 * float64(total)
	var seen float64
	for _, b := range bs {
		if b.Count == 0 {
			continue
		}
		if seen+float64(b.Count) >= want {
			frac := (want - seen) / float64(b.Count)
			return time.Duration((b.Start + frac*(b.End-b.Start)) * float64(time.Second))
		}
		seen += float64(b.Count)
	}
	return time.Duration(bs[len(bs)-1].End * float64(time.Second))
}
