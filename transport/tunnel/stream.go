package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/transport/wire"
)

// AbortCode is the QUIC stream error code a carried stream is cancelled
// with.
type AbortCode quic.StreamErrorCode

// Abort codes; 1 is the refusal that a status frame explains.
const (
	// AbortFailed: the other side (a TCP connection) reset or failed.
	AbortFailed AbortCode = 2
	// AbortIdle: nothing moved for the idle timeout.
	AbortIdle AbortCode = 3
	// AbortDone: a control stream was answered; nothing more is read.
	AbortDone AbortCode = 4
)

// Stream is one carried stream: a reliable, flow-controlled byte stream in
// both directions, with half-close. Read and Write may be called from one
// goroutine each, concurrently; Abort from any.
type Stream struct {
	s       *quic.Stream
	release func()
	once    sync.Once

	// Of an opened stream, for Status: its peer, connection and node.
	p    *peer
	pc   *peerConn
	node string
}

// Read reads what the peer sent; io.EOF once it closed its side.
func (s *Stream) Read(p []byte) (int, error) { return s.s.Read(p) }

// Write sends p, blocking under the peer's flow control.
func (s *Stream) Write(p []byte) (int, error) { return s.s.Write(p) }

// CloseWrite ends this side's sending (a FIN); reading carries on.
func (s *Stream) CloseWrite() error { return s.s.Close() }

// Context is done once this side's sending has ended: after CloseWrite or
// Abort, or when the peer stopped reading (it gave up on the stream).
func (s *Stream) Context() context.Context { return s.s.Context() }

// SetReadDeadline bounds the next reads; the zero time lifts the bound.
func (s *Stream) SetReadDeadline(t time.Time) { s.s.SetReadDeadline(t) }

// CancelRead stops reading: the peer's further writes fail with code.
func (s *Stream) CancelRead(code AbortCode) { s.s.CancelRead(quic.StreamErrorCode(code)) }

// Abort cancels both directions with code.
func (s *Stream) Abort(code AbortCode) {
	s.s.CancelRead(quic.StreamErrorCode(code))
	s.s.CancelWrite(quic.StreamErrorCode(code))
}

// Peer is the agent an opened stream goes to; the zero Peer for an
// accepted inbound stream (Inbound.Peer names that one's).
func (s *Stream) Peer() Peer {
	if s.p == nil {
		return Peer{}
	}
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return Peer{Node: s.node, Addr: s.p.addr}
}

// Release ends the caller's use of an opened stream's connection; call it
// once the stream is finished with. It is idempotent, and a no-op on an
// accepted inbound stream.
func (s *Stream) Release() {
	if s.release != nil {
		s.once.Do(s.release)
	}
}

// Connector opens streams to an instance of one destination, chosen per
// call by the caller's routing and balancing (package transport
// implements it). A protocol handler calls it once per connection, or once
// per request. Connect blocks until a stream is accepted or every attempt
// failed; it logs and counts its own failures. done must be called when
// the stream is finished with. It is safe for concurrent use.
type Connector interface {
	Connect(ctx context.Context) (s *Stream, done func(), err error)
}

// RefusedError is the error of a connect the receiving agent refused.
// errors.Is(err, ErrRefused) holds for it.
type RefusedError struct {
	// Node is the receiving node.
	Node string
	// Code and Reason are the receiver's status frame.
	Code   wire.Code
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("transport: node %s refused: %s: %s", e.Node, e.Code, e.Reason)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// NotHolderError is an OpenStream to a peer whose certificate, on the
// connection that would carry the stream, holds no identity of the
// service asked for. errors.Is(err, ErrNotHolder) holds for it.
type NotHolderError struct {
	Service string
	// Held lists the services the certificate holds, comma-separated, or
	// "none".
	Held string
}

func (e *NotHolderError) Error() string {
	return fmt.Sprintf("its agent's certificate holds no identity of service %s (services held: %s)", e.Service, e.Held)
}

// Is makes errors.Is(err, ErrNotHolder) true.
func (e *NotHolderError) Is(target error) bool { return target == ErrNotHolder }

// connectionLevel reports whether err, from a stream, is the end of its
// whole QUIC connection rather than of the stream alone.
func connectionLevel(err error) bool {
	if _, ok := errors.AsType[*quic.StatelessResetError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return true
	}
	_, ok := errors.AsType[*quic.TransportError](err)
	return ok
}

// Peer names a peer agent: its node and its tunnel address.
type Peer struct {
	Node string
	Addr netip.AddrPort
}

// OpenStream opens a stream to the peer agent, writes hdr and waits for
// the peer's status, all within AttemptTimeout. On success the caller owns
// the stream and calls its Release when done. It fails with a
// *RefusedError (ErrRefused) when the peer refused the stream, an
// ErrNotHolder error when the peer's certificate lacks hdr.Service's
// identity (nothing was sent), an ErrConnLost error when the connection
// died under the attempt, and ErrPeerUnreachable when no connection could
// be made. It is safe for concurrent use.
func (t *Tunnel) OpenStream(ctx context.Context, to Peer, hdr *wire.Header) (*Stream, error) {
	return t.openAccepted(ctx, to, hdr, true)
}

// OpenPipelined opens a stream to the peer agent and writes hdr, within
// AttemptTimeout, without waiting for the peer's status: the caller sends
// its payload at once (a request) and reads the status with Stream.Status
// before the answer. It fails as OpenStream does, except that a refusal
// comes from Status. The caller owns the stream and calls its Release
// when done.
func (t *Tunnel) OpenPipelined(ctx context.Context, to Peer, hdr *wire.Header) (*Stream, error) {
	actx, cancel := context.WithTimeout(ctx, t.cfg.AttemptTimeout)
	defer cancel()
	return t.open(actx, to, hdr, true)
}

// OpenControl opens a control stream (IsControl) to the peer agent, writes
// hdr and waits for the peer's status, as OpenStream does, except that the
// peer's certificate need not hold hdr.Service: a hold or resume may go
// to the calling side of a session, which holds no identity of it.
func (t *Tunnel) OpenControl(ctx context.Context, to Peer, hdr *wire.Header) (*Stream, error) {
	return t.openAccepted(ctx, to, hdr, false)
}

// openAccepted opens a stream, writes hdr and waits for the peer's status,
// all within AttemptTimeout; holder is open's.
func (t *Tunnel) openAccepted(ctx context.Context, to Peer, hdr *wire.Header, holder bool) (*Stream, error) {
	actx, cancel := context.WithTimeout(ctx, t.cfg.AttemptTimeout)
	defer cancel()
	s, err := t.open(actx, to, hdr, holder)
	if err != nil {
		return nil, err
	}
	if dl, ok := actx.Deadline(); ok {
		s.s.SetReadDeadline(dl)
	}
	err = s.Status(s.s)
	s.s.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// open opens a stream to the peer agent and writes hdr. holder asks that
// the peer's certificate hold hdr.Service's identity.
func (t *Tunnel) open(actx context.Context, to Peer, hdr *wire.Header, holder bool) (*Stream, error) {
	p, err := t.peerFor(to.Node, to.Addr)
	if err != nil {
		return nil, err
	}
	pc, err := p.acquire(actx)
	if err != nil {
		return nil, err
	}
	if !pc.local.has(hdr.Source) {
		// The certificate presented on this connection predates the claim
		// (a service was added and the certificate reissued): move to a
		// fresh connection if the current certificate carries it.
		if cur, err := t.currentCert(); err == nil && cur.cert != pc.local.cert && cur.has(hdr.Source) {
			pc.release(p)
			p.broken(pc)
			if pc, err = p.acquire(actx); err != nil {
				return nil, err
			}
		}
	}
	if holder && !pc.holds(hdr.Service) {
		// Decided from the certificate of the connection's handshake, with
		// no new handshake. The peer may have been issued a certificate
		// that holds the identity since (a service just registered): a
		// connection old enough is replaced in the background, and a later
		// call sees the new certificate.
		pc.release(p)
		p.recheck(pc)
		held := "none"
		if len(pc.services) > 0 {
			held = strings.Join(pc.services, ", ")
		}
		return nil, &NotHolderError{Service: hdr.Service, Held: held}
	}
	st := &Stream{p: p, pc: pc, node: to.Node}
	st.release = func() { pc.release(p) }
	s, err := openStream(actx, pc.conn)
	if err != nil {
		st.release()
		if errors.Is(err, errNoCredit) {
			t.m.noCredit.Inc()
			return nil, &RefusedError{Node: to.Node, Code: wire.CodeOverloaded, Reason: err.Error()}
		}
		return nil, st.connGone(err, fmt.Errorf("%w: node %s: open stream: %v", ErrPeerUnreachable, to.Node, err))
	}
	st.s = s
	bp := t.hdrPool.Get().(*[]byte)
	b, err := wire.AppendHeader((*bp)[:0], hdr)
	if err == nil {
		_, err = s.Write(b)
	}
	t.hdrPool.Put(bp)
	if err != nil {
		s.CancelWrite(quic.StreamErrorCode(AbortFailed))
		s.CancelRead(quic.StreamErrorCode(AbortFailed))
		st.release()
		return nil, st.connGone(err, fmt.Errorf("transport: node %s: write header: %w", to.Node, err))
	}
	return st, nil
}

// creditWait bounds the wait for stream credit from a peer. Credit comes
// back within a round trip of a stream closing, and a peer over its own
// limit is refused by admission below the QUIC credit (the headroom of
// transport's quicStreamCredit); a longer wait means the peer grants no
// more.
const creditWait = 250 * time.Millisecond

var errNoCredit = errors.New("the peer grants no more streams on this connection (its tunnel.max_streams_per_peer is reached)")

// openStream opens a stream at once when the peer has granted the credit,
// else waits for it up to creditWait, so that a full peer refuses promptly
// with errNoCredit instead of holding the caller to its deadline.
func openStream(ctx context.Context, conn *quic.Conn) (*quic.Stream, error) {
	s, err := conn.OpenStream()
	var full *quic.StreamLimitReachedError
	if !errors.As(err, &full) {
		return s, err
	}
	wctx, cancel := context.WithTimeout(ctx, creditWait)
	defer cancel()
	s, err = conn.OpenStreamSync(wctx)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, errNoCredit
	}
	return s, err
}

// Status reads the peer's status frame of an opened stream from r (the
// stream, or a buffered reader over it) and returns nil if the peer
// accepted the stream. Otherwise the stream is cancelled and released, and
// the error is a *RefusedError (ErrRefused) for a refusal, an ErrConnLost
// error when the connection died, or the read's error.
func (s *Stream) Status(r io.Reader) error {
	st, err := wire.ReadStatus(r)
	if err != nil {
		s.s.CancelWrite(quic.StreamErrorCode(AbortFailed))
		s.s.CancelRead(quic.StreamErrorCode(AbortFailed))
		s.Release()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// No answer in time: the peer may have restarted without our
			// knowing. The next caller dials afresh.
			s.p.broken(s.pc)
		}
		return s.connGone(err, fmt.Errorf("transport: node %s: read status: %w", s.node, err))
	}
	if !st.Accepted() {
		s.s.CancelWrite(streamRefused)
		s.s.CancelRead(streamRefused)
		s.Release()
		return &RefusedError{Node: s.node, Code: st.Code, Reason: st.Reason}
	}
	return nil
}

// connGone marks err as the loss of the whole QUIC connection (peer
// restarted and reset it, idle timeout): the instance itself may be fine,
// and a fresh connection is worth one more try. The cause, from quic-go,
// is checked too: a closing connection fails its streams before it
// cancels its context.
func (s *Stream) connGone(cause, err error) error {
	if s.pc.conn.Context().Err() != nil || connectionLevel(cause) {
		s.p.broken(s.pc)
		return fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	return err
}
