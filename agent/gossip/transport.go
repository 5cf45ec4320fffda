package gossip

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// Stats are the traffic counters of one gossip member, counted at its
// transport: memberlist's payload after encryption, without IP, UDP or TCP
// headers.
type Stats struct {
	PacketBytesSent     uint64
	PacketBytesReceived uint64
	StreamBytesSent     uint64
	StreamBytesReceived uint64
	PacketsSent         uint64
	PacketsReceived     uint64
}

// BytesSent is the total of packet and stream bytes sent.
func (s Stats) BytesSent() uint64 { return s.PacketBytesSent + s.StreamBytesSent }

// BytesReceived is the total of packet and stream bytes received.
func (s Stats) BytesReceived() uint64 { return s.PacketBytesReceived + s.StreamBytesReceived }

type counters struct {
	pktSent, pktRecv, streamSent, streamRecv, nPktSent, nPktRecv atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		PacketBytesSent:     c.pktSent.Load(),
		PacketBytesReceived: c.pktRecv.Load(),
		StreamBytesSent:     c.streamSent.Load(),
		StreamBytesReceived: c.streamRecv.Load(),
		PacketsSent:         c.nPktSent.Load(),
		PacketsReceived:     c.nPktRecv.Load(),
	}
}

// observedTransport wraps the transport memberlist uses. It counts bytes,
// and it reports dials to a named node that were refused: the node's kernel
// answered that nothing listens on its gossip port.
type observedTransport struct {
	inner     memberlist.NodeAwareTransport
	c         *counters
	onRefused func(node string)
	// watched maps the addresses of suspected members to their names;
	// a packet from one of them goes to onLife. Nil when none is suspected.
	watched atomic.Pointer[map[string]string]
	onLife  func(node string)

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*observedTransport)(nil)

func newObservedTransport(inner memberlist.Transport, c *counters, onRefused, onLife func(string)) *observedTransport {
	na, ok := inner.(memberlist.NodeAwareTransport)
	if !ok {
		na = nodeAwareShim{inner}
	}
	t := &observedTransport{
		inner:     na,
		c:         c,
		onRefused: onRefused,
		onLife:    onLife,
		packetCh:  make(chan *memberlist.Packet),
		streamCh:  make(chan net.Conn),
		stop:      make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *observedTransport) forwardPackets() {
	defer t.wg.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			t.c.pktRecv.Add(uint64(len(p.Buf)))
			t.c.nPktRecv.Add(1)
			if w := t.watched.Load(); w != nil && p.From != nil && t.onLife != nil {
				if name, ok := (*w)[p.From.String()]; ok {
					t.onLife(name)
				}
			}
			select {
			case t.packetCh <- p:
			case <-t.stop:
				return
			}
		case <-t.stop:
			return
		}
	}
}

func (t *observedTransport) forwardStreams() {
	defer t.wg.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case conn := <-in:
			select {
			case t.streamCh <- &countedConn{Conn: conn, c: t.c}:
			case <-t.stop:
				_ = conn.Close()
				return
			}
		case <-t.stop:
			return
		}
	}
}

func (t *observedTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *observedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *observedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ts, err := t.inner.WriteToAddress(b, a)
	if err == nil {
		t.c.pktSent.Add(uint64(len(b)))
		t.c.nPktSent.Add(1)
	}
	return ts, err
}

func (t *observedTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *observedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *observedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		if a.Name != "" && errors.Is(err, syscall.ECONNREFUSED) && t.onRefused != nil {
			t.onRefused(a.Name)
		}
		return nil, err
	}
	return &countedConn{Conn: conn, c: t.c}, nil
}

func (t *observedTransport) StreamCh() <-chan net.Conn { return t.streamCh }

func (t *observedTransport) Shutdown() error {
	var err error
	t.stopOnce.Do(func() {
		// The inner transport's listeners may be blocked handing over a
		// packet: keep forwarding until they are gone, then stop.
		err = t.inner.Shutdown()
		close(t.stop)
		t.wg.Wait()
	})
	return err
}

// countedConn counts the bytes of one stream.
type countedConn struct {
	net.Conn
	c *counters
}

func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.c.streamRecv.Add(uint64(n))
	return n, err
}

func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.c.streamSent.Add(uint64(n))
	return n, err
}

// nodeAwareShim lifts a plain Transport to a NodeAwareTransport.
type nodeAwareShim struct{ memberlist.Transport }

func (s nodeAwareShim) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return s.WriteTo(b, a.Addr)
}

func (s nodeAwareShim) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return s.DialTimeout(a.Addr, timeout)
}
