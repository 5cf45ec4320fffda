//go:build !linux

package udpgro

import "net"

func wrap(pc net.PacketConn) (net.PacketConn, bool) { return pc, false }
