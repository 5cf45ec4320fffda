package testnet

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipTransport is a memberlist transport on a host: its packets are the
// host's datagrams and its streams the host's streams, at the same port, as
// memberlist's own transport uses UDP and TCP on one port number. It is what
// a node's gossip layer runs on in tests.
type GossipTransport struct {
	h        *Host
	pc       *PacketConn
	ln       net.Listener
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	shutdown chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*GossipTransport)(nil)

// GossipTransport opens the host's gossip transport on port (datagrams and
// streams). A node that restarts opens it again on the same port, once the
// previous one is shut down.
func (h *Host) GossipTransport(port int) (*GossipTransport, error) {
	pc, err := h.ListenPacket(port)
	if err != nil {
		return nil, fmt.Errorf("testnet: gossip transport of %s: %w", h.name, err)
	}
	ln, err := h.Listen(int(pc.port))
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("testnet: gossip transport of %s: %w", h.name, err)
	}
	t := &GossipTransport{
		h:        h,
		pc:       pc,
		ln:       ln,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		shutdown: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// Addr is the transport's host:port.
func (t *GossipTransport) Addr() string { return t.h.Addr(int(t.pc.port)) }

func (t *GossipTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := t.pc.ReadFrom(buf)
		if err != nil {
			return // closed by Shutdown
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: time.Now()}
		select {
		case t.packetCh <- p:
		case <-t.shutdown:
			return
		}
	}
}

func (t *GossipTransport) acceptStreams() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return // closed by Shutdown
		}
		select {
		case t.streamCh <- c:
		case <-t.shutdown:
			c.Close()
			return
		}
	}
}

// FinalAdvertiseAddr returns the host's address, or ip when set.
func (t *GossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = int(t.pc.port)
	}
	if ip == "" {
		return t.h.ip.AsSlice(), port, nil
	}
	a := net.ParseIP(ip)
	if a == nil {
		return nil, 0, fmt.Errorf("testnet: advertise address %q is not an IP", ip)
	}
	return a, port, nil
}

// WriteTo sends a packet to addr.
func (t *GossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends a packet to a.Addr.
func (t *GossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ap, err := parseAddr(a.Addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.pc.WriteTo(b, net.UDPAddrFromAddrPort(ap))
	return time.Now(), err
}

// PacketCh delivers the packets received.
func (t *GossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a stream to addr.
func (t *GossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a stream to a.Addr, failing after timeout.
func (t *GossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.h.Dial(ctx, "tcp", a.Addr)
}

// StreamCh delivers the streams accepted.
func (t *GossipTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the port (packets to it are lost, dials refused, as after
// a kill -9) and waits for the transport's goroutines. It is idempotent.
func (t *GossipTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.shutdown)
		t.pc.Close()
		t.ln.Close()
		t.wg.Wait()
	})
	return nil
}
