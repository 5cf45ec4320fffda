package testnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// PacketConn is a host's datagram socket on the network: a net.PacketConn,
// so that quic-go, memberlist's packet path or a DNS server run on it
// unchanged. Addresses are *net.UDPAddr. It is safe for concurrent use;
// ReadFrom blocks until a datagram arrives, the read deadline passes or the
// conn is closed.
type PacketConn struct {
	h    *Host
	port uint16

	queue  chan datagram
	closed chan struct{}
	once   sync.Once
	rd     deadline
}

type datagram struct {
	b    []byte
	from *net.UDPAddr
}

// ListenPacket opens a datagram socket on port (0: a free one).
func (h *Host) ListenPacket(port int) (*PacketConn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, err := h.pickPort(port, func(p uint16) bool { return h.packets[p] != nil })
	if err != nil {
		return nil, err
	}
	c := &PacketConn{h: h, port: p, queue: make(chan datagram, h.n.opts.QueueLen), closed: make(chan struct{})}
	c.rd.init()
	h.packets[p] = c
	return c, nil
}

// pickPort returns port if it is free, or the first free one from 40000
// when port is 0. Called with h.mu held.
func (h *Host) pickPort(port int, busy func(uint16) bool) (uint16, error) {
	if port < 0 || port > 65535 {
		return 0, fmt.Errorf("testnet: %s: port %d out of range", h.name, port)
	}
	if port != 0 {
		if busy(uint16(port)) {
			return 0, fmt.Errorf("%w: %s", ErrPortInUse, h.Addr(port))
		}
		return uint16(port), nil
	}
	for p := uint16(40000); p != 0; p++ {
		if !busy(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("testnet: %s: no free port", h.name)
}

func (c *PacketConn) udpAddr() *net.UDPAddr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.h.ip, c.port))
}

// LocalAddr is the conn's *net.UDPAddr.
func (c *PacketConn) LocalAddr() net.Addr { return c.udpAddr() }

// ReadFrom returns the next datagram. A datagram longer than b is cut, as
// a UDP socket cuts it.
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case <-c.closed:
		return 0, nil, c.opErr("read", ErrClosed)
	default:
	}
	select {
	case d := <-c.queue:
		return copy(b, d.b), d.from, nil
	case <-c.closed:
		return 0, nil, c.opErr("read", ErrClosed)
	case <-c.rd.wait():
		return 0, nil, c.opErr("read", os.ErrDeadlineExceeded)
	}
}

// WriteTo sends b to addr. Like UDP it reports success for a datagram that
// is then lost: to a cut link, by the loss rate, to an address no socket
// holds, or to a full queue.
func (c *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, c.opErr("write", ErrClosed)
	default:
	}
	ap, err := parseAddr(addr.String())
	if err != nil {
		return 0, c.opErr("write", err)
	}
	n := c.h.n
	dst := n.hostAt(ap.Addr())
	if dst == nil {
		n.count(func(s *Stats) { s.Unreachable++ })
		return len(b), nil
	}
	lost, delay := n.fate(c.h.name, dst.name)
	if lost {
		return len(b), nil
	}
	d := datagram{b: append([]byte(nil), b...), from: c.udpAddr()}
	if delay <= 0 {
		dst.deliver(ap.Port(), d)
	} else {
		time.AfterFunc(delay, func() { dst.deliver(ap.Port(), d) })
	}
	return len(b), nil
}

// deliver queues d at port, or counts it lost.
func (h *Host) deliver(port uint16, d datagram) {
	h.mu.Lock()
	c := h.packets[port]
	h.mu.Unlock()
	if c == nil {
		h.n.count(func(s *Stats) { s.Unreachable++ })
		return
	}
	select {
	case <-c.closed:
		h.n.count(func(s *Stats) { s.Unreachable++ })
	case c.queue <- d:
		h.n.count(func(s *Stats) { s.Delivered++ })
	default:
		h.n.count(func(s *Stats) { s.Overflowed++ })
	}
}

// Close frees the port; datagrams to it are lost from now on. It is
// idempotent.
func (c *PacketConn) Close() error {
	c.once.Do(func() {
		c.h.mu.Lock()
		if c.h.packets[c.port] == c {
			delete(c.h.packets, c.port)
		}
		c.h.mu.Unlock()
		close(c.closed)
	})
	return nil
}

// SetDeadline sets the read deadline; writes never block.
func (c *PacketConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline makes a pending and future ReadFrom fail once t passes.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline is accepted and ignored: writes never block.
func (c *PacketConn) SetWriteDeadline(time.Time) error { return nil }

func (c *PacketConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Addr: c.udpAddr(), Err: err}
}

// deadline is a settable point in time with a channel that is closed when
// it passes.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
}

func (d *deadline) init() { d.ch = make(chan struct{}) }

// set moves the deadline; the zero time clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired and closed it: reopen below
	}
	d.timer = nil
	select {
	case <-d.ch:
		d.ch = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur <= 0 {
		close(d.ch)
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(time.Until(t), func() { close(ch) })
}

// wait returns the channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}
