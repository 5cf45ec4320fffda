package transport

import (
	"fmt"
	"syscall"
)

// maxStreamsPerPeer bounds MaxStreamsPerPeer: more would let one peer hold
// more streams than an agent carries in all.
const maxStreamsPerPeer = 1 << 20

// CheckMaxStreamsPerPeer checks the cap on one peer's concurrent streams.
// Validate applies it, and agent/config to tunnel.max_streams_per_peer;
// its error names no field. (The range, tunnel.vip_range, is vip's:
// vip.CheckPrefix.)
func CheckMaxStreamsPerPeer(n int) error {
	if n < 1 || n > maxStreamsPerPeer {
		return fmt.Errorf("%d must be between 1 and %d", n, maxStreamsPerPeer)
	}
	return nil
}

// The bounds of DefaultMaxStreamsPerPeer.
const (
	minDefaultStreamsPerPeer = 4096
	maxDefaultStreamsPerPeer = 65536
)

// DefaultMaxStreamsPerPeer sizes the per-peer stream limit from the
// process's open-file limit (which Go raises to the hard limit at start):
// each inbound stream holds one descriptor, its connection to the local
// app, and half the limit leaves the rest to the host's own callers, its
// listeners and other peers. It is never below 4,096 nor above 65,536:
// the shipped unit's LimitNOFILE=65536 gives 32,768.
func DefaultMaxStreamsPerPeer() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return minDefaultStreamsPerPeer
	}
	return int(min(max(rl.Cur/2, minDefaultStreamsPerPeer), maxDefaultStreamsPerPeer))
}
