//go:build !linux

package tunnel

const (
	soRcvBufForce   = 0
	soSndBufForce   = 0
	bufReportFactor = 1
)
