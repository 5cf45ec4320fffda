//go:build !linux

package sdnotify

import "errors"

// monotonicUsec is only needed under systemd, which runs on Linux.
func monotonicUsec() (uint64, error) {
	return 0, errors.New("CLOCK_MONOTONIC is only read on Linux")
}
