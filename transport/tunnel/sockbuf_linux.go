package tunnel

import "syscall"

// Privileged variants that ignore net.core.rmem_max and wmem_max.
const (
	soRcvBufForce = syscall.SO_RCVBUFFORCE
	soSndBufForce = syscall.SO_SNDBUFFORCE
	// bufReportFactor: getsockopt reports twice the buffer granted.
	bufReportFactor = 2
)
