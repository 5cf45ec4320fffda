// Package dnsserver answers DNS queries for the mesh domain from the local
// catalog snapshot, and forwards every other zone to configured recursors.
//
// Names under the domain (default "mesh."):
//
//	<svc>.service.<domain>            A/AAAA: the service VIP, or the passing instances
//	<tag>.<svc>.service.<domain>      the same, instances carrying tag
//	<svc>.service.direct.<domain>     A/AAAA/SRV: always the passing instances
//	_<svc>._tcp.service.<domain>      SRV (RFC 2782); <svc>.service.<domain> SRV too
//	<node>.node.<domain>              A/AAAA of a node
//	<hex>.addr.<domain>               A/AAAA of an SRV target with its own address
//	<domain>                          SOA, NS
//
// and PTR for VIPs and catalog addresses. docs/dns.md is the operator's guide.
//
// The query path reads the immutable catalog snapshot without a lock and
// writes responses in wire format into per-goroutine buffers, so that
// answering allocates nothing. Anything unusual in a query falls to the
// same careful parser: a malformed query gets FORMERR or, when even its
// header is unreadable, no reply at all; it never panics the server.
package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/catalog"
)

// Sentinel errors, wrapped with the operation that failed.
var (
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("server closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("server already started")
	// ErrNoCatalog is returned by New without Deps.Catalog.
	ErrNoCatalog = errors.New("no catalog")
)

// CatalogReader gives the current catalog snapshot. Current is called once
// per query from many goroutines at once; it must not block and must never
// return nil. *catalog.Store implements it.
type CatalogReader interface {
	Current() *catalog.Snapshot
}

// VIPResolver maps services to the virtual IPs the data plane listens on,
// and back. Both methods are called on the query path from many goroutines
// at once: they must be safe for concurrent use, must not block, and should
// not allocate. service names are as the catalog spells them; compare them
// case-insensitively, as DNS does.
type VIPResolver interface {
	// VIP returns the virtual IP of service, if it has one.
	VIP(service string) (netip.Addr, bool)
	// ServiceAt returns the service whose virtual IP is ip, if any.
	ServiceAt(ip netip.Addr) (string, bool)
}

// Deps are the collaborators of a Server.
type Deps struct {
	// Catalog is required.
	Catalog CatalogReader
	// VIPs is optional. When set, <svc>.service.<domain> answers the VIP
	// (unless Config.Direct), and PTR answers VIPs.
	VIPs VIPResolver
	// Logger defaults to one that discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means they are not exported.
	Registerer prometheus.Registerer
}

// Server is the DNS server. Create it with New, then Start it; Close stops
// it. ServeDNS may be used without Start, as a dns.Handler.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics
	fwd     *forwarder

	domainWire   []byte // lower-case wire form of cfg.Domain
	domainLabels int
	serviceTTL   uint32
	nodeTTL      uint32
	negTTL       uint32

	pool sync.Pool // *scratch for TCP connections and ServeDNS

	mu      sync.Mutex
	started bool
	closed  bool
	pc      net.PacketConn
	ln      net.Listener
	conns   map[net.Conn]struct{}
	cancel  context.CancelFunc
	ctx     context.Context
	wg      sync.WaitGroup
	closeMu sync.Once
	tcpSem  chan struct{}
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Catalog == nil {
		return nil, fmt.Errorf("dnsserver: new: %w", ErrNoCatalog)
	}
	cfg = cfg.withDefaults()
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, cfg.Recursors)
	if err != nil {
		return nil, fmt.Errorf("dnsserver: new: %w", err)
	}
	dom := make([]byte, 256)
	n, err := dns.PackDomainName(dns.CanonicalName(cfg.Domain), dom, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("dnsserver: new: domain %q: %w", cfg.Domain, ErrInvalidConfig)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:          cfg,
		deps:         deps,
		log:          deps.Logger,
		metrics:      m,
		domainWire:   dom[:n],
		domainLabels: dns.CountLabel(cfg.Domain),
		serviceTTL:   uint32(cfg.ServiceTTL / time.Second),
		nodeTTL:      uint32(cfg.NodeTTL / time.Second),
		negTTL:       uint32(cfg.NegativeTTL / time.Second),
		conns:        map[net.Conn]struct{}{},
		ctx:          ctx,
		cancel:       cancel,
		tcpSem:       make(chan struct{}, cfg.MaxTCPConns),
	}
	s.pool.New = func() any { return newScratch() }
	if len(cfg.Recursors) > 0 {
		s.fwd = newForwarder(cfg, m, deps.Logger)
	}
	return s, nil
}

// Listen binds a UDP socket and a TCP listener on addr ("127.0.0.1:8600"),
// for Start. With port 0, both get the same free port.
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dnsserver: listen %q: %w", addr, err)
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dnsserver: listen udp %s: %w", addr, err)
		}
		taddr := net.JoinHostPort(host, fmt.Sprint(pc.LocalAddr().(*net.UDPAddr).Port))
		l, err := net.Listen("tcp", taddr)
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("dnsserver: listen tcp %s: %w", taddr, err)
		}
		// The free UDP port was taken on TCP: try another one.
	}
}

// Start serves DNS on pc (UDP) and l (TCP), either of which may be nil, and
// returns once both are being served. The server owns them from the call
// on: it closes them in Close, or at once when Start fails (except with
// ErrStarted). ctx bounds only the start; Close stops the server.
func (s *Server) Start(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	fail := func(err error) error {
		// The sockets were handed over: do not leak them.
		if pc != nil {
			pc.Close()
		}
		if l != nil {
			l.Close()
		}
		return fmt.Errorf("dnsserver: start: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fail(ErrClosed)
	case s.started:
		return fmt.Errorf("dnsserver: start: %w", ErrStarted) // the sockets may be the running ones
	}
	s.started = true
	s.pc, s.ln = pc, l
	if pc != nil {
		for i := 0; i < s.cfg.UDPReaders; i++ {
			s.wg.Add(1)
			go s.serveUDP(pc)
		}
	}
	if l != nil {
		s.wg.Add(1)
		go s.serveTCP(l)
	}
	s.log.Info("dns server started", "udp", addrString(pc), "tcp", listenerString(l), "domain", s.cfg.Domain, "recursors", len(s.cfg.Recursors))
	return nil
}

func addrString(pc net.PacketConn) string {
	if pc == nil {
		return ""
	}
	return pc.LocalAddr().String()
}

func listenerString(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Close stops the server: it closes the sockets, which ends the readers,
// closes open TCP connections, cancels forwarded queries, and waits for
// every goroutine. It is idempotent and returns the first socket error.
func (s *Server) Close() error {
	var err error
	s.closeMu.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.cancel()
		if s.pc != nil {
			err = s.pc.Close()
		}
		if s.ln != nil {
			if e := s.ln.Close(); err == nil {
				err = e
			}
		}
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		if err != nil {
			err = fmt.Errorf("dnsserver: close: %w", err)
		}
	})
	return err
}

// serveUDP reads queries until the socket is closed. Several run on one
// socket: the kernel hands each datagram to one of them.
func (s *Server) serveUDP(pc net.PacketConn) {
	defer s.wg.Done()
	sc := newScratch()
	buf := sc.in // the query; sc.out receives the answer
	uc, _ := pc.(*net.UDPConn)
	for {
		var (
			n    int
			ap   netip.AddrPort
			addr net.Addr
			err  error
		)
		if uc != nil {
			n, ap, err = uc.ReadFromUDPAddrPort(buf)
		} else {
			n, addr, err = pc.ReadFrom(buf)
		}
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dns udp read failed", "err", err)
			continue
		}
		start := time.Now()
		resp, act := s.respond(sc, buf[:n], false)
		switch act {
		case actReply:
			if uc != nil {
				_, err = uc.WriteToUDPAddrPort(resp, ap)
			} else {
				_, err = pc.WriteTo(resp, addr)
			}
			if err != nil {
				s.metrics.writeErrors.Inc()
			}
			s.metrics.observe(sc.q.qtype, sc.rcode, srcLocal, start)
		case actForward:
			if addr == nil {
				addr = net.UDPAddrFromAddrPort(ap)
			}
			s.forwardUDP(pc, addr, buf[:n], sc.q.qtype, sc.maxSize, start)
		default:
			s.metrics.dropped.Inc()
		}
	}
}

// forwardUDP answers a query for another zone from a goroutine of its own,
// bounded by MaxForwards.
func (s *Server) forwardUDP(pc net.PacketConn, addr net.Addr, msg []byte, qtype uint16, maxSize int, start time.Time) {
	if !s.fwd.acquire() {
		resp := s.fwd.servfail(msg)
		if resp != nil {
			pc.WriteTo(resp, addr)
		}
		s.metrics.observe(qtype, rcodeFail, srcForward, start)
		return
	}
	req := append([]byte(nil), msg...)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.fwd.release()
		resp, rcode := s.fwd.exchange(s.ctx, req, false, maxSize)
		if resp != nil {
			if _, err := pc.WriteTo(resp, addr); err != nil {
				s.metrics.writeErrors.Inc()
			}
		}
		s.metrics.observe(qtype, rcode, srcForward, start)
	}()
}

func (s *Server) serveTCP(l net.Listener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("dns tcp accept failed", "err", err)
			// Usually EMFILE: give the process a moment rather than spin.
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		select {
		case s.tcpSem <- struct{}{}:
		default:
			s.metrics.tcpRejected.Inc()
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			<-s.tcpSem
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveTCPConn(c)
	}
}

// serveTCPConn answers length-prefixed queries (RFC 1035 4.2.2) in order
// until the client closes, goes idle, or sends garbage framing.
func (s *Server) serveTCPConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		<-s.tcpSem
	}()
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	in := sc.in
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := io.ReadFull(c, in[:2]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(in))
		msg := in[2 : 2+n]
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		start := time.Now()
		resp, act := s.respond(sc, msg, true)
		src := srcLocal
		switch act {
		case actDrop:
			s.metrics.dropped.Inc()
			continue
		case actForward:
			src = srcForward
			var rcode int
			resp, rcode = s.fwd.exchange(s.ctx, msg, true, 65535)
			sc.rcode = rcode
			if resp == nil {
				return
			}
		}
		s.metrics.observe(sc.q.qtype, sc.rcode, src, start)
		c.SetWriteDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		var err error
		if act == actReply {
			// resp is sc.out[2:]: put the length in front, one write.
			binary.BigEndian.PutUint16(sc.out, uint16(len(resp)))
			_, err = c.Write(sc.out[:2+len(resp)])
		} else {
			_, err = c.Write(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp))))
			if err == nil {
				_, err = c.Write(resp)
			}
		}
		if err != nil {
			s.metrics.writeErrors.Inc()
			return
		}
	}
}

// ServeDNS answers r through w, as the sockets of Start do; it makes the
// server a dns.Handler (for a dns.ServeMux, a test recorder, or a
// dns.Server of the caller's). The transport is TCP when w's remote address
// is a *net.TCPAddr, UDP otherwise.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	start := time.Now()
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	msg, err := r.PackBuffer(sc.in)
	if err != nil {
		m := new(dns.Msg)
		m.SetRcodeFormatError(r)
		w.WriteMsg(m)
		s.metrics.observe(0, rcodeForm, srcLocal, start)
		return
	}
	resp, act := s.respond(sc, msg, tcp)
	switch act {
	case actDrop:
		s.metrics.dropped.Inc()
		return
	case actForward:
		var rcode int
		resp, rcode = s.fwd.exchange(s.ctx, msg, tcp, sc.maxSize)
		s.metrics.observe(sc.q.qtype, rcode, srcForward, start)
		if resp != nil {
			w.Write(resp)
		}
		return
	}
	w.Write(resp)
	s.metrics.observe(sc.q.qtype, sc.rcode, srcLocal, start)
}
