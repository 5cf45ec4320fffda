//go:build !linux

package rawio

import "net"

// WrapTCP returns c: raw calls exist on Linux only.
func WrapTCP(c *net.TCPConn) net.Conn { return c }
