package dnsserver

import (
	"context"
	"encoding/binary"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends queries for other zones to the recursors. It tries them in
// order, starting with the one that answered last, so that a dead first
// recursor costs one timeout once rather than on every query.
type forwarder struct {
	addrs   []string
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
	first   atomic.Uint32
	sem     chan struct{}
	ednsMax uint16
	metrics *metrics
	log     *slog.Logger
}

func newForwarder(cfg Config, m *metrics, log *slog.Logger) *forwarder {
	return &forwarder{
		addrs:   cfg.Recursors,
		timeout: cfg.RecursorTimeout,
		udp:     &dns.Client{Net: "udp", Timeout: cfg.RecursorTimeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: cfg.RecursorTimeout},
		sem:     make(chan struct{}, cfg.MaxForwards),
		ednsMax: uint16(cfg.EDNSBufferSize),
		metrics: m,
		log:     log,
	}
}

// acquire takes a slot for one forwarded query, without waiting.
func (f *forwarder) acquire() bool {
	select {
	case f.sem <- struct{}{}:
		return true
	default:
		f.metrics.forwardOverload.Inc()
		return false
	}
}

func (f *forwarder) release() { <-f.sem }

// exchange forwards the query msg over the client's transport and returns
// the response to send, or nil for none, and its RCODE. A recursor that
// fails, times out, or answers SERVFAIL or REFUSED is followed by the next;
// when all fail the client gets the last SERVFAIL/REFUSED, else SERVFAIL.
func (f *forwarder) exchange(ctx context.Context, msg []byte, tcp bool, maxSize int) ([]byte, int) {
	req := new(dns.Msg)
	if err := req.Unpack(msg); err != nil {
		// The fast parser accepted what miekg/dns does not (an RDATA it
		// checks more strictly): the query is malformed after all.
		return formErrHeader(msg), rcodeForm
	}
	c := f.udp
	if tcp {
		c = f.tcp
	}
	first := int(f.first.Load())
	var last *dns.Msg
	for i := range f.addrs {
		idx := (first + i) % len(f.addrs)
		resp, err := f.try(ctx, c, req, f.addrs[idx])
		if err != nil {
			f.metrics.forwardErrors.WithLabelValues(f.addrs[idx]).Inc()
			f.log.Debug("dns forward failed", "recursor", f.addrs[idx], "name", req.Question[0].Name, "err", err)
			if ctx.Err() != nil {
				return nil, rcodeFail // shutting down
			}
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			f.metrics.forwardErrors.WithLabelValues(f.addrs[idx]).Inc()
			last = resp
			continue
		}
		if idx != first {
			f.first.Store(uint32(idx))
		}
		return f.pack(resp, tcp, maxSize), resp.Rcode
	}
	if last != nil {
		return f.pack(last, tcp, maxSize), last.Rcode
	}
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(f.ednsMax, opt.Do())
	}
	return f.pack(m, tcp, maxSize), rcodeFail
}

// try asks one recursor, within the timeout; Close cancels ctx, which
// closes the socket at once rather than waiting for the timeout.
func (f *forwarder) try(ctx context.Context, c *dns.Client, req *dns.Msg, addr string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, req, conn)
	return resp, err
}

// pack encodes resp for the client, truncated to what it accepts over UDP.
func (f *forwarder) pack(resp *dns.Msg, tcp bool, maxSize int) []byte {
	if tcp {
		maxSize = dns.MaxMsgSize
	}
	resp.Truncate(maxSize)
	b, err := resp.Pack()
	if err != nil {
		f.log.Debug("dns forward: cannot pack response", "err", err)
		return nil
	}
	return b
}

// servfail is the reply to a query that cannot be forwarded now.
func (f *forwarder) servfail(msg []byte) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(msg); err != nil {
		return formErrHeader(msg)
	}
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return b
}

// formErrHeader is a header-only FORMERR reply to msg.
func formErrHeader(msg []byte) []byte {
	if len(msg) < headerLen {
		return nil
	}
	b := make([]byte, headerLen)
	copy(b, msg[:2])
	flags := binary.BigEndian.Uint16(msg[2:])
	binary.BigEndian.PutUint16(b[2:], flagQR|flags&(0xF<<11|flagRD|flagCD)|rcodeForm)
	return b
}
