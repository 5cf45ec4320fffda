package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// NetTransport is the production gossip transport: one UDP socket and one
// TCP listener on the same address and port. It replaces memberlist's own
// NetTransport, which allocates a 64 KiB buffer for every packet it
// receives; this one reads into one buffer and copies each packet out at its
// size, so that the garbage it makes is proportional to the traffic.
// Its methods are safe for concurrent use.
type NetTransport struct {
	udp      *net.UDPConn
	tcp      *net.TCPListener
	bindIP   net.IP
	port     int
	log      *slog.Logger
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	stop     chan struct{}
	closing  atomic.Bool
	once     sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*NetTransport)(nil)

// udpRecvBuffer is the socket receive buffer asked for, as memberlist does:
// room for bursts while the reader is busy.
const udpRecvBuffer = 2 << 20

// NewNetTransport listens on bindAddr:port, TCP and UDP; port 0 takes a free
// port (Port tells which). logger may be nil.
func NewNetTransport(bindAddr string, port int, logger *slog.Logger) (*NetTransport, error) {
	ip := net.ParseIP(bindAddr)
	if ip == nil {
		return nil, fmt.Errorf("gossip: transport: bind address %q is not an IP", bindAddr)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, fmt.Errorf("gossip: transport: %w", err)
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("gossip: transport: %w", err)
	}
	for size := udpRecvBuffer; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &NetTransport{
		udp: udp, tcp: tcp, bindIP: ip, port: port, log: logger,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		stop:     make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.accept()
	return t, nil
}

// Port is the bound port.
func (t *NetTransport) Port() int { return t.port }

func (t *NetTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := t.udp.ReadFromUDP(buf)
		ts := time.Now()
		if err != nil {
			if t.closing.Load() {
				return
			}
			t.log.Error("gossip transport: UDP read failed", "err", err)
			continue
		}
		if n == 0 {
			continue
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: ts}
		select {
		case t.packetCh <- p:
		case <-t.stop:
			return
		}
	}
}

func (t *NetTransport) accept() {
	defer t.wg.Done()
	delay := time.Duration(0)
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closing.Load() {
				return
			}
			// Out of file descriptors and the like: back off, up to 1 s.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Error("gossip transport: TCP accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-t.stop:
				return
			}
		}
		delay = 0
		select {
		case t.streamCh <- conn:
		case <-t.stop:
			conn.Close()
			return
		}
	}
}

// FinalAdvertiseAddr returns the address to advertise: ip when given (with
// the bound port when port is 0), else the bound IP, or the first private IP
// when bound to all addresses.
func (t *NetTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.port
	}
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("gossip: transport: advertise address %q is not an IP", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	if !t.bindIP.IsUnspecified() {
		a := t.bindIP
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	priv, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("gossip: transport: find a private address to advertise: %w", err)
	}
	if priv == "" {
		return nil, 0, errors.New("gossip: transport: bound to all addresses and no private address found; set an advertise address")
	}
	a := net.ParseIP(priv)
	if a4 := a.To4(); a4 != nil {
		a = a4
	}
	return a, port, nil
}

// WriteTo sends one packet.
func (t *NetTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	// Stamp before the write, as memberlist's own transport does: probes
	// measure round trips from here.
	ts := time.Now()
	_, err = t.udp.WriteTo(b, ua)
	return ts, err
}

// WriteToAddress sends one packet.
func (t *NetTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh delivers received packets.
func (t *NetTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a stream.
func (t *NetTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout opens a stream.
func (t *NetTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh delivers accepted streams.
func (t *NetTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the sockets and waits for the reading goroutines. It is
// idempotent.
func (t *NetTransport) Shutdown() error {
	t.once.Do(func() {
		t.closing.Store(true)
		t.udp.Close()
		t.tcp.Close()
		close(t.stop)
		t.wg.Wait()
	})
	return nil
}

// Addr is the bound host:port.
func (t *NetTransport) Addr() string {
	return net.JoinHostPort(t.bindIP.String(), strconv.Itoa(t.port))
}
