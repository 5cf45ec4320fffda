//go:build linux

package sockdiag

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

var seq atomic.Uint32

// LookupTCP returns the TCP socket whose own address is local and whose
// peer is remote, in this network namespace.
func LookupTCP(local, remote netip.AddrPort) (Socket, error) {
	n := seq.Add(1)
	req, err := buildRequest(unmap(local), unmap(remote), n)
	if err != nil {
		return Socket{}, err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return Socket{}, fmt.Errorf("sockdiag: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// The kernel answers within sendmsg; the timeout only guards a kernel
	// that never does.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return Socket{}, fmt.Errorf("sockdiag: netlink timeout: %w", err)
	}
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return Socket{}, fmt.Errorf("sockdiag: netlink send: %w", err)
	}
	var buf [1024]byte
	for {
		m, _, err := unix.Recvfrom(fd, buf[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Socket{}, fmt.Errorf("sockdiag: netlink receive: %w", err)
		}
		return parseReply(buf[:m], n)
	}
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
