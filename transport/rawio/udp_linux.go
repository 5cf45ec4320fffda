package rawio

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// UDP reads and writes a UDP socket with raw recvmsg and sendmsg. Reads
// come from one goroutine at a time (quic-go has one reader per socket);
// writes may come from many (one per QUIC connection).
type UDP struct {
	rc    syscall.RawConn
	inet6 bool // an AF_INET6 socket: IPv4 peers are sent to as v4-mapped

	// The receive side: one header, reused by every read.
	hdr   unix.Msghdr
	iov   unix.Iovec
	from  unix.RawSockaddrAny
	flags int
	n     uintptr
	errno syscall.Errno
	rfunc func(fd uintptr) bool

	// The sender of the last read and its address as handed out: quic-go
	// gets the same *net.UDPAddr while the sender stays the same.
	lastFrom unix.RawSockaddrAny
	lastAddr *net.UDPAddr

	sends sync.Pool // of *sendMsg
}

// NewUDP returns raw calls on uc, or false when raw calls are off or the
// socket's raw connection or address is unavailable.
func NewUDP(uc *net.UDPConn) (*UDP, bool) {
	if !Enabled {
		return nil, false
	}
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
	u := &UDP{rc: rc, inet6: inet6}
	u.rfunc = u.recv
	u.sends.New = func() any {
		m := &sendMsg{}
		m.fn = m.send
		return m
	}
	return u, true
}

// Read reads one message into m (its first buffer, and its OOB for the
// control messages), blocking until one arrives or the read deadline
// passes.
func (u *UDP) Read(m *ipv4.Message, flags int) error {
	buf, oob := m.Buffers[0], m.OOB
	u.iov.Base = &buf[0]
	u.iov.SetLen(len(buf))
	u.hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&u.from)), Namelen: unix.SizeofSockaddrAny, Iov: &u.iov}
	u.flags = flags
	u.hdr.SetIovlen(1)
	if len(oob) > 0 {
		u.hdr.Control = &oob[0]
		u.hdr.SetControllen(len(oob))
	}
	err := u.rc.Read(u.rfunc)
	u.iov.Base, u.hdr.Control = nil, nil
	if err == nil && u.errno != 0 {
		err = os.NewSyscallError("recvmsg", u.errno)
	}
	if err != nil {
		return &net.OpError{Op: "read", Net: "udp", Err: err}
	}
	m.N, m.NN, m.Flags = int(u.n), int(u.hdr.Controllen), int(u.hdr.Flags)
	if u.lastAddr == nil || u.from != u.lastFrom {
		u.lastFrom, u.lastAddr = u.from, udpAddr(&u.from)
	}
	m.Addr = u.lastAddr
	return nil
}

// recv is one attempt; false means "wait until readable and call again".
func (u *UDP) recv(fd uintptr) bool {
	for {
		u.n, _, u.errno = unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&u.hdr)), uintptr(u.flags))
		if u.errno != unix.EINTR {
			return u.errno != unix.EAGAIN
		}
	}
}

// udpAddr is the sender of a received message, in the form that
// net.UDPConn gives it.
func udpAddr(sa *unix.RawSockaddrAny) *net.UDPAddr {
	switch sa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return &net.UDPAddr{IP: net.IPv4(p.Addr[0], p.Addr[1], p.Addr[2], p.Addr[3]), Port: port(&p.Port)}
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		a := &net.UDPAddr{IP: append(net.IP(nil), p.Addr[:]...), Port: port(&p.Port)}
		if p.Scope_id != 0 {
			if ifi, err := net.InterfaceByIndex(int(p.Scope_id)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return nil
}

// port reads a port kept in network byte order; setPort writes one.
func port(p *uint16) int { return int(binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:])) }

func setPort(p *uint16, v int) {
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(p))[:], uint16(v))
}

// sendMsg is one sendmsg's header, payload and destination, pooled with
// its callback so that a send allocates nothing.
type sendMsg struct {
	hdr   unix.Msghdr
	iov   unix.Iovec
	to    unix.RawSockaddrInet6 // or a RawSockaddrInet4 at its start
	n     uintptr
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// send is one attempt; false means "wait until writable and call again".
func (m *sendMsg) send(fd uintptr) bool {
	for {
		m.n, _, m.errno = unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&m.hdr)), 0)
		if m.errno != unix.EINTR {
			return m.errno != unix.EAGAIN
		}
	}
}

// Write sends b with the control messages oob (a GSO segment size, ECN) to
// addr. ok is false, and nothing was sent, when addr is one the raw path
// does not take (with a zone, or of a family the socket cannot reach); the
// caller then uses the socket's own call, which gives the error.
func (u *UDP) Write(b, oob []byte, addr *net.UDPAddr) (n, oobn int, ok bool, err error) {
	if addr == nil || addr.Zone != "" || len(b) == 0 {
		return 0, 0, false, nil
	}
	m := u.sends.Get().(*sendMsg)
	defer u.sends.Put(m)
	m.to = unix.RawSockaddrInet6{}
	var namelen uint32
	if ip4 := addr.IP.To4(); ip4 != nil && !u.inet6 {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&m.to))
		sa.Family = unix.AF_INET
		setPort(&sa.Port, addr.Port)
		copy(sa.Addr[:], ip4)
		namelen = unix.SizeofSockaddrInet4
	} else if ip16 := addr.IP.To16(); ip16 != nil && u.inet6 {
		m.to.Family = unix.AF_INET6
		setPort(&m.to.Port, addr.Port)
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
	err = u.rc.Write(m.fn)
	m.iov.Base, m.hdr.Control = nil, nil // the pool must not keep b or oob alive
	if err == nil && m.errno != 0 {
		err = os.NewSyscallError("sendmsg", m.errno)
	}
	if err != nil {
		return 0, 0, true, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: err}
	}
	return int(m.n), len(oob), true, nil
}
