//go:build !linux

package transport

import "net"

func rawTCPConn(c *net.TCPConn) net.Conn { return c }
