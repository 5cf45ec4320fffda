package sdnotify

import (
	"syscall"
	"unsafe"
)

// clockMonotonic is CLOCK_MONOTONIC from <time.h>, the clock systemd reads
// for MONOTONIC_USEC.
const clockMonotonic = 1

// monotonicUsec returns CLOCK_MONOTONIC in microseconds. Go's time package
// keeps its monotonic reading private, so it is read directly.
func monotonicUsec() (uint64, error) {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, errno
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, nil
}
