package ui

import (
	"context"
	"math"
	"sort"
	"time"
)

// Topology answers GET /v1/ui/topology: the calls between services, with
// where their numbers come from.
type Topology struct {
	// Provider is "agents" (each agent asked for its counters) or
	// "prometheus".
	Provider string `json:"provider"`
	// Window is the span the rates cover, in seconds; 0 while the agents
	// provider has only one reading.
	WindowSeconds float64 `json:"window_seconds"`
	// Sources are where the numbers were read: each agent asked, or the
	// Prometheus URL, with the error of any that failed.
	Sources []Source `json:"sources"`
	// Edges are the calls from one service to another seen in the window.
	Edges []Edge `json:"edges"`
	// Note says what the numbers cannot show, such as agents that were
	// not asked because no telemetry port is known.
	Note string `json:"note,omitempty"`
	// At is when the numbers were read.
	At time.Time `json:"at"`
}

// Source is one place the numbers were read from.
type Source struct {
	// Node is the agent asked; empty for Prometheus.
	Node string `json:"node,omitempty"`
	// Addr is the scraped host, for a Prometheus target, which the nodes
	// page matches to a node's address.
	Addr string `json:"addr,omitempty"`
	// URL is what was read: an agent's telemetry listener, "local" for the
	// serving agent's own registry, or the Prometheus API.
	URL string `json:"url"`
	// OK is false when the read failed; Error then says why.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// LeafExpiresAt is when the agent's leaf certificate expires, from its
	// meshwork_ca_leaf_expiry_seconds; absent when unknown.
	LeafExpiresAt *time.Time `json:"leaf_expires_at,omitempty"`
	// Version is the agent's version, from its meshwork_build_info;
	// empty when unknown.
	Version string `json:"version,omitempty"`
}

// Edge is the calls from Source to Destination: L7 requests and L4
// connections counted by the calling agent.
type Edge struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// RPS is calls finished per second in the window.
	RPS float64 `json:"rps"`
	// ErrorRate is the share of those calls that failed, 0 to 1.
	ErrorRate float64 `json:"error_rate"`
	// P99Seconds is the 99th percentile of their duration; null when no
	// call finished in the window.
	P99Seconds *float64 `json:"p99_seconds"`
	// Total is the calls counted since the calling agents started.
	Total float64 `json:"total"`
}

// Provider reads the topology's numbers. Read may block on the network
// for as long as ctx allows; it is safe for concurrent use.
type Provider interface {
	Read(ctx context.Context) (Topology, error)
}

// edgeKey names an edge.
type edgeKey struct{ source, destination string }

// edgeCounts are the cumulative counters of one edge on one agent.
type edgeCounts struct {
	total, failures float64
	// buckets are the duration histogram's cumulative counts by upper
	// bound, classic buckets, +Inf included.
	buckets map[float64]float64
}

// sortEdges orders edges by source, then destination, for stable pages.
func sortEdges(es []Edge) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].Source != es[j].Source {
			return es[i].Source < es[j].Source
		}
		return es[i].Destination < es[j].Destination
	})
}

// quantile estimates the q-quantile from cumulative bucket counts, as
// PromQL's histogram_quantile does: linear within the bucket that holds
// the rank, the lower bound of the first bucket taken as 0, and the
// highest finite bound when the rank falls in +Inf. ok is false when the
// buckets count nothing.
func quantile(q float64, buckets map[float64]float64) (float64, bool) {
	bounds := make([]float64, 0, len(buckets))
	for b := range buckets {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return 0, false
	}
	total := buckets[bounds[len(bounds)-1]]
	if total <= 0 || !math.IsInf(bounds[len(bounds)-1], 1) {
		return 0, false
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, b := range bounds {
		c := buckets[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return prevBound, true
			}
			if c == prevCount {
				return b, true
			}
			return prevBound + (b-prevBound)*(rank-prevCount)/(c-prevCount), true
		}
		prevBound, prevCount = b, c
	}
	return prevBound, true
}
