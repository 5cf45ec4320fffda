// Package sockdiag asks the kernel which user owns a TCP socket, through
// netlink sock_diag (NETLINK_SOCK_DIAG, an inet_diag exact lookup by
// 4-tuple). The data plane uses it to tell which local service opened a
// connection to a virtual IP: on loopback both ends of a connection live
// on this host, so the caller's socket can be looked up by the addresses
// of the accepted one.
//
// Only Linux is supported; elsewhere every lookup fails with ErrUnsupported.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Errors of a lookup. Compare with errors.Is.
var (
	// ErrNotFound means no socket has that 4-tuple (the caller may have
	// closed it already).
	ErrNotFound = errors.New("sockdiag: no such socket")
	// ErrUnsupported means the platform has no sock_diag.
	ErrUnsupported = errors.New("sockdiag: not supported on this platform")
	// ErrBadReply means the kernel's answer could not be parsed.
	ErrBadReply = errors.New("sockdiag: malformed reply")
)

// Socket is what the kernel reports about one socket.
type Socket struct {
	// UID owns the socket: the effective uid of the process that created it.
	UID uint32
	// Inode is the socket's inode, as in /proc/<pid>/fd.
	Inode uint32
	// State is the TCP state (1 = ESTABLISHED).
	State uint8
}

// PeerOf returns the socket at the other end of c, a TCP connection
// accepted on this host from this host (loopback). It is the caller's
// socket: its local address is c's remote address and vice versa.
func PeerOf(c net.Conn) (Socket, error) {
	local, remote, err := addrs(c)
	if err != nil {
		return Socket{}, err
	}
	return LookupTCP(remote, local)
}

func addrs(c net.Conn) (local, remote netip.AddrPort, err error) {
	la, ok1 := c.LocalAddr().(*net.TCPAddr)
	ra, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return local, remote, fmt.Errorf("sockdiag: %T is not a TCP connection", c)
	}
	return la.AddrPort(), ra.AddrPort(), nil
}

// Netlink constants (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h).
const (
	nlmsgHdrLen       = 16
	nlmsgError        = 2
	nlmsgDone         = 3
	sockDiagByFamily  = 20
	nlmFRequest       = 0x1
	inetDiagReqV2Len  = 56
	inetDiagMsgLen    = 72
	ipprotoTCP        = 6
	afInet            = 2
	afInet6           = 10
	allTCPStates      = 0xfff
	inetDiagNoCookie0 = 0xffffffff
)

// buildRequest encodes an inet_diag_req_v2 exact lookup of the TCP socket
// whose own address is local and whose peer is remote, in a netlink message.
func buildRequest(local, remote netip.AddrPort, seq uint32) ([]byte, error) {
	family := uint8(afInet)
	if !local.Addr().Is4() || !remote.Addr().Is4() {
		if local.Addr().Is4() != remote.Addr().Is4() {
			return nil, fmt.Errorf("sockdiag: %v and %v are of different families", local, remote)
		}
		family = afInet6
	}
	b := make([]byte, nlmsgHdrLen+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], nlmFRequest)
	ne.PutUint32(b[8:], seq)
	// pid 0: the kernel.
	r := b[nlmsgHdrLen:]
	r[0] = family
	r[1] = ipprotoTCP
	ne.PutUint32(r[4:], allTCPStates)
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], remote.Port())
	putAddr(id[4:20], local.Addr())
	putAddr(id[20:36], remote.Addr())
	// idiag_if (id[36:40]) 0: any interface.
	ne.PutUint32(id[40:], inetDiagNoCookie0)
	ne.PutUint32(id[44:], inetDiagNoCookie0)
	return b, nil
}

func putAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
		return
	}
	v := a.As16()
	copy(dst, v[:])
}

// parseReply reads the kernel's answer to the request numbered seq.
func parseReply(b []byte, seq uint32) (Socket, error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		if l < nlmsgHdrLen || l > len(b) {
			return Socket{}, fmt.Errorf("%w: message length %d of %d bytes", ErrBadReply, l, len(b))
		}
		msg := b[nlmsgHdrLen:l]
		if ne.Uint32(b[8:]) == seq {
			switch typ {
			case nlmsgError:
				if len(msg) < 4 {
					return Socket{}, fmt.Errorf("%w: short error message", ErrBadReply)
				}
				errno := -int32(ne.Uint32(msg))
				if errno == 2 { // ENOENT
					return Socket{}, ErrNotFound
				}
				return Socket{}, fmt.Errorf("sockdiag: kernel error %d", errno)
			case nlmsgDone:
				return Socket{}, ErrNotFound
			case sockDiagByFamily:
				if len(msg) < inetDiagMsgLen {
					return Socket{}, fmt.Errorf("%w: inet_diag_msg of %d bytes", ErrBadReply, len(msg))
				}
				return Socket{
					State: msg[1],
					UID:   ne.Uint32(msg[64:]),
					Inode: ne.Uint32(msg[68:]),
				}, nil
			}
		}
		// Messages are 4-byte aligned.
		l = (l + 3) &^ 3
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return Socket{}, ErrNotFound
}
