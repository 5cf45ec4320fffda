package main

import (
	"testing"
	"time"
)

func TestParseTargets(t *testing.T) {
	names, urls, err := parseTargets("a=http://127.0.0.1:1/,b=http://127.0.0.1:2/")
	if err != nil || len(names) != 2 || names[1] != "b" || urls[0] != "http://127.0.0.1:1/" {
		t.Fatalf("parseTargets = %v %v %v", names, urls, err)
	}
	for _, bad := range []string{"", "a", "=http://x/", "a=", "a=http://x/,b"} {
		if _, _, err := parseTargets(bad); err == nil {
			t.Errorf("parseTargets(%q): no error", bad)
		}
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	var us []int32
	for i := 100; i >= 1; i-- { // unsorted on purpose
		us = append(us, int32(i))
	}
	for q, want := range map[float64]time.Duration{50: 51 * time.Microsecond, 99: 100 * time.Microsecond, 0: time.Microsecond} {
		if got := percentile(us, q); got != want {
			t.Errorf("p%g = %s, want %s", q, got, want)
		}
	}
	if us[0] != 100 {
		t.Error("percentile sorted its argument in place")
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("p99 of nothing = %s", got)
	}
}

func TestBlockDiffsPairsTheSameBlocks(t *testing.T) {
	a := pathLatencies{Micros: []int32{10, 10, 50, 50}, Blocks: []int32{0, 0, 2, 2}}
	b := pathLatencies{Micros: []int32{4, 4, 7, 20, 20}, Blocks: []int32{0, 0, 1, 2, 2}}
	got := blockDiffs(a, b, 50)
	// Block 1 has no request of a's: only blocks 0 and 2 pair, sorted.
	want := []time.Duration{6 * time.Microsecond, 30 * time.Microsecond}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("blockDiffs = %v, want %v", got, want)
	}
	if _, _, _, err := quartiles(nil); err == nil {
		t.Error("quartiles of no block: no error")
	}
}

func TestHalvesSplitByOrder(t *testing.T) {
	even, odd := halves(pathLatencies{Micros: []int32{1, 2, 3, 4, 5}})
	if len(even) != 3 || len(odd) != 2 || even[2] != 5 || odd[0] != 2 {
		t.Errorf("halves = %v %v", even, odd)
	}
}
