package testnet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// listener is a host's stream port: a net.Listener.
type listener struct {
	h      *Host
	port   uint16
	accept chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// Listen opens a stream port on the host (0: a free one). The listener's
// Accept returns the streams other hosts Dial to it.
func (h *Host) Listen(port int) (net.Listener, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, err := h.pickPort(port, func(p uint16) bool { return h.streams[p] != nil })
	if err != nil {
		return nil, err
	}
	l := &listener{h: h, port: p, accept: make(chan net.Conn), closed: make(chan struct{})}
	h.streams[p] = l
	return l, nil
}

func (l *listener) Addr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(l.h.ip, l.port))
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.closed:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: ErrClosed}
	}
}

// Close frees the port: dials to it are refused from now on. Streams it
// accepted stay up, as TCP connections outlive their listener.
func (l *listener) Close() error {
	l.once.Do(func() {
		l.h.mu.Lock()
		if l.h.streams[l.port] == l {
			delete(l.h.streams, l.port)
		}
		l.h.mu.Unlock()
		close(l.closed)
	})
	return nil
}

// Dial opens a stream from the host to addr (host:port on the network),
// with the signature of net.Dialer.DialContext. A dial to a port nobody
// listens on is refused (ECONNREFUSED); a dial across a cut link hangs
// until ctx ends, then times out, as a dial to a silent host does.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: strAddr(addr), Err: err}
	}
	ap, err := parseAddr(addr)
	if err != nil {
		return nil, opErr(err)
	}
	n := h.n
	dst := n.hostAt(ap.Addr())
	n.mu.Lock()
	cut := dst != nil && !n.reachableLocked(h.name, dst.name)
	reject := dst != nil && n.rejectsLocked(h.name, dst.name)
	delay := time.Duration(0)
	if dst != nil {
		delay = n.links[[2]string{h.name, dst.name}].Delay + n.links[[2]string{dst.name, h.name}].Delay
	}
	n.mu.Unlock()
	if reject {
		return nil, opErr(os.NewSyscallError("connect", syscall.EHOSTUNREACH))
	}
	if cut || dst == nil {
		// No route: nothing answers the SYN.
		select {
		case <-ctx.Done():
		case <-n.closed:
		}
		return nil, opErr(errTimeout{})
	}
	if delay > 0 { // the handshake's round trip
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, opErr(errTimeout{})
		}
	}
	dst.mu.Lock()
	l := dst.streams[ap.Port()]
	dst.mu.Unlock()
	refused := opErr(os.NewSyscallError("connect", syscall.ECONNREFUSED))
	if l == nil {
		return nil, refused
	}
	// The source port is a fresh one on the dialing host, as the kernel
	// picks it.
	local := net.TCPAddrFromAddrPort(netip.AddrPortFrom(h.ip, h.ephemeralPort()))
	a, b := net.Pipe()
	out := n.newStream(a, h.name, dst.name, local, l.Addr())
	in := n.newStream(b, dst.name, h.name, l.Addr(), local)
	select {
	case l.accept <- in:
		return out, nil
	case <-l.closed:
	case <-ctx.Done():
		// A live but busy host: the accept queue is full.
		a.Close()
		b.Close()
		n.forget(out, in)
		return nil, opErr(errTimeout{})
	}
	a.Close()
	b.Close()
	n.forget(out, in)
	return nil, refused
}

// DialTimeout is Dial with a timeout instead of a context.
func (h *Host) DialTimeout(network, addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return h.Dial(ctx, network, addr)
}

func (h *Host) ephemeralPort() uint16 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextEphemeral++
	return 50000 + h.nextEphemeral%15000
}

// streamConn is one end of a stream: a net.Pipe end with the hosts'
// addresses, whose writes wait out the link's delay and which breaks when
// its link is cut.
type streamConn struct {
	net.Conn
	n             *Network
	from, to      string
	local, remote net.Addr
	broken        chan struct{}
	breakOnce     sync.Once
}

func (n *Network) newStream(c net.Conn, from, to string, local, remote net.Addr) *streamConn {
	s := &streamConn{Conn: c, n: n, from: from, to: to, local: local, remote: remote, broken: make(chan struct{})}
	n.mu.Lock()
	n.streams[s] = struct{}{}
	n.mu.Unlock()
	return s
}

func (n *Network) forget(cs ...*streamConn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range cs {
		delete(n.streams, c)
	}
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// errLinkCut is what reads and writes of a stream return once its link
// was cut, as a connection reset by a lost route ends.
var errLinkCut = os.NewSyscallError("read", syscall.ECONNRESET)

func (c *streamConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && c.isBroken() {
		return n, &net.OpError{Op: "read", Net: "tcp", Addr: c.remote, Err: errLinkCut}
	}
	return n, err
}

// Write waits out the link's delay, then writes: the data arrives late and
// in order.
func (c *streamConn) Write(b []byte) (int, error) {
	if c.isBroken() {
		return 0, &net.OpError{Op: "write", Net: "tcp", Addr: c.remote, Err: errLinkCut}
	}
	if d := c.n.LinkOf(c.from, c.to).Delay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.broken:
			t.Stop()
			return 0, &net.OpError{Op: "write", Net: "tcp", Addr: c.remote, Err: errLinkCut}
		}
	}
	n, err := c.Conn.Write(b)
	if err != nil && c.isBroken() {
		return n, &net.OpError{Op: "write", Net: "tcp", Addr: c.remote, Err: errLinkCut}
	}
	return n, err
}

func (c *streamConn) isBroken() bool {
	select {
	case <-c.broken:
		return true
	default:
		return false
	}
}

// breakLink ends the stream because its link was cut: both ends' reads and
// writes fail.
func (c *streamConn) breakLink() {
	c.breakOnce.Do(func() { close(c.broken) })
	c.Conn.Close()
}

func (c *streamConn) Close() error {
	c.n.forget(c)
	return c.Conn.Close()
}

type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }
