package udpgro

import (
	"encoding/binary"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// The tunnel socket is read and written with raw system calls, waiting
// for readiness through the runtime's poller as net.UDPConn does. A plain
// call tells the Go scheduler it entered a system call; when one lasts
// longer than a scheduler tick, the runtime hands the agent's P to another
// thread, which costs two thread wake-ups on the request's path. The socket
// is non-blocking, so a raw call never blocks.

// rawSocket is the state of the raw calls: the socket, its family, and the
// one receive header, reused by every read (reads come from one goroutine).
type rawSocket struct {
	rc    syscall.RawConn
	inet6 bool

	hdr  unix.Msghdr
	iov  unix.Iovec
	from unix.RawSockaddrAny

	// The sender of the last read, and its address as handed out: quic-go
	// gets the same *net.UDPAddr while the sender stays the same.
	lastFrom unix.RawSockaddrAny
	lastAddr *net.UDPAddr
}

func newRawSocket(uc *net.UDPConn) (*rawSocket, bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, false
	}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil || serr != nil {
		return nil, false
	}
	_, inet6 := sa.(*unix.SockaddrInet6)
	return &rawSocket{rc: rc, inet6: inet6}, true
}

// read reads one message into m, blocking until one arrives.
func (r *rawSocket) read(m *ipv4.Message, flags int) error {
	buf, oob := m.Buffers[0], m.OOB
	r.iov.Base = &buf[0]
	r.iov.SetLen(len(buf))
	r.hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&r.from)), Namelen: unix.SizeofSockaddrAny, Iov: &r.iov, Control: &oob[0]}
	r.hdr.SetIovlen(1)
	r.hdr.SetControllen(len(oob))
	var n uintptr
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.hdr)), uintptr(flags))
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("recvmsg", errno)
	}
	if err != nil {
		return &net.OpError{Op: "read", Net: "udp", Err: err}
	}
	m.N, m.NN, m.Flags = int(n), int(r.hdr.Controllen), int(r.hdr.Flags)
	if r.lastAddr == nil || r.from != r.lastFrom {
		r.lastFrom, r.lastAddr = r.from, sockaddrToUDP(&r.from)
	}
	m.Addr = r.lastAddr
	return nil
}

// sockaddrToUDP is the address of a received message, in the form that
// net.UDPConn gives it.
func sockaddrToUDP(sa *unix.RawSockaddrAny) *net.UDPAddr {
	switch sa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return &net.UDPAddr{IP: net.IPv4(p.Addr[0], p.Addr[1], p.Addr[2], p.Addr[3]), Port: port(p.Port)}
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		a := &net.UDPAddr{IP: append(net.IP(nil), p.Addr[:]...), Port: port(p.Port)}
		if p.Scope_id != 0 {
			if ifi, err := net.InterfaceByIndex(int(p.Scope_id)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return nil
}

// port reads a port kept in network byte order.
func port(p uint16) int { return int(binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p))[:])) }

// sendMsg is one sendmsg's header, payload and destination, allocated per
// call: quic-go sends from one goroutine per connection.
type sendMsg struct {
	hdr unix.Msghdr
	iov unix.Iovec
	to  unix.RawSockaddrInet6 // or a RawSockaddrInet4 at its start
}

// write sends b with the control messages oob to addr. ok is false when
// addr is one that the raw path does not handle (a zone, or a family the
// socket lacks); the caller then uses the socket's own call.
func (r *rawSocket) write(b, oob []byte, addr *net.UDPAddr) (n, oobn int, ok bool, err error) {
	if addr == nil || addr.Zone != "" || len(b) == 0 {
		return 0, 0, false, nil
	}
	m := &sendMsg{}
	var namelen uint32
	if ip4 := addr.IP.To4(); ip4 != nil && !r.inet6 {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&m.to))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], uint16(addr.Port))
		copy(sa.Addr[:], ip4)
		namelen = unix.SizeofSockaddrInet4
	} else if ip16 := addr.IP.To16(); ip16 != nil && r.inet6 {
		m.to.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&m.to.Port))[:], uint16(addr.Port))
		copy(m.to.Addr[:], ip16)
		namelen = unix.SizeofSockaddrInet6
	} else {
		return 0, 0, false, nil
	}
	m.iov.Base = &b[0]
	m.iov.SetLen(len(b))
	m.hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&m.to)), Namelen: namelen, Iov: &m.iov}
	m.hdr.SetIovlen(1)
	if len(oob) > 0 {
		m.hdr.Control = &oob[0]
		m.hdr.SetControllen(len(oob))
	}
	var sent uintptr
	var errno syscall.Errno
	err = r.rc.Write(func(fd uintptr) bool {
		for {
			sent, _, errno = unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&m.hdr)), 0)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("sendmsg", errno)
	}
	if err != nil {
		return 0, 0, true, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: err}
	}
	return int(sent), len(oob), true, nil
}
