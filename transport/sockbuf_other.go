//go:build !linux

package transport

const (
	soRcvBufForce   = 0
	soSndBufForce   = 0
	bufReportFactor = 1
)
