package l4

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/transport/rawio"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// smallBuf is the copy buffer of an interactive connection. A direction
// whose reads fill it switches to a CopyBuffer-sized one for bulk transfer
// and back when it quietens, so that thousands of idle connections do not
// each pin two large buffers.
const smallBuf = 8 << 10

var smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}

// splicer moves bytes both ways between a TCP connection and a stream.
//
// Half-close: EOF from the TCP side closes the stream's send side (FIN);
// EOF from the stream half-closes the TCP connection (CloseWrite); the
// other direction carries on. Errors abort both: the TCP connection is
// reset and the stream cancelled both ways. Backpressure: each direction
// holds one buffer and blocks on its write, so a slow reader stalls its
// writer through TCP windows and QUIC flow control; nothing queues without
// bound.
type splicer struct {
	p    *Proxy
	c    net.Conn
	tcp  *net.TCPConn // c, when it is TCP (for linger and half-close)
	s    *tunnel.Stream
	last atomic.Int64 // unix ns of the last byte moved
	once sync.Once
	idle *time.Timer
	// idled records that the idle timeout cut the connection.
	idled atomic.Bool
}

// splice runs until both directions end and returns the bytes moved from
// the TCP side to the stream and back, and whether the idle timeout cut
// the connection. It closes c.
func (p *Proxy) splice(c net.Conn, tcp *net.TCPConn, s *tunnel.Stream) (toStream, fromStream int64, idle bool) {
	if tcp != nil {
		c = rawio.WrapTCP(tcp)
	}
	sp := &splicer{p: p, c: c, tcp: tcp, s: s}
	sp.touch()
	sp.idle = time.AfterFunc(p.cfg.IdleTimeout, sp.checkIdle)
	defer sp.idle.Stop()

	// The other direction ends before splice returns: no goroutine
	// outlives the call.
	done := make(chan int64, 1)
	go func() { done <- sp.tcpToStream() }()
	fromStream = sp.streamToTCP()
	toStream = <-done
	c.Close()
	return toStream, fromStream, sp.idled.Load()
}

func (sp *splicer) touch() { sp.last.Store(time.Now().UnixNano()) }

// checkIdle aborts the splice when nothing moved for IdleTimeout, and
// otherwise re-arms itself for the remainder.
func (sp *splicer) checkIdle() {
	idle := sp.p.cfg.IdleTimeout
	since := time.Duration(time.Now().UnixNano() - sp.last.Load())
	if since >= idle {
		sp.p.log.Debug("proxied connection idle, closing", "idle", since)
		sp.idled.Store(true)
		sp.abort(tunnel.AbortIdle)
		return
	}
	sp.idle.Reset(idle - since)
}

// abort resets the TCP connection and cancels both sides of the stream.
func (sp *splicer) abort(code tunnel.AbortCode) {
	sp.once.Do(func() {
		if sp.tcp != nil {
			sp.tcp.SetLinger(0) // RST: the other end must see a failure, not an end
		}
		sp.c.Close()
		sp.s.Abort(code)
	})
}

type halfCloser interface{ CloseWrite() error }

func (sp *splicer) tcpToStream() int64 {
	n, rerr, werr := sp.copy(sp.s, sp.c)
	switch {
	case werr != nil: // the peer stopped reading, or the connection died
		sp.abort(tunnel.AbortFailed)
	case rerr == nil || errors.Is(rerr, io.EOF):
		sp.s.CloseWrite() // FIN: the caller finished sending
	default:
		sp.abort(tunnel.AbortFailed)
	}
	return n
}

func (sp *splicer) streamToTCP() int64 {
	n, rerr, werr := sp.copy(sp.c, sp.s)
	switch {
	case werr != nil:
		sp.abort(tunnel.AbortFailed)
	case rerr == nil || errors.Is(rerr, io.EOF):
		if hc, ok := sp.c.(halfCloser); ok {
			hc.CloseWrite()
		}
	default: // reset by the peer, or the connection died
		sp.abort(tunnel.AbortFailed)
	}
	return n
}

// copy moves bytes from src to dst until src ends or either fails, and
// returns the read error (io.EOF at a clean end) and the write error apart.
func (sp *splicer) copy(dst io.Writer, src io.Reader) (n int64, rerr, werr error) {
	small := smallPool.Get().(*[]byte)
	defer smallPool.Put(small)
	var big *[]byte
	defer func() {
		if big != nil {
			sp.p.bufPool.Put(big)
		}
	}()
	buf := *small
	for {
		nr, err := src.Read(buf)
		if nr > 0 {
			sp.touch()
			nw, err := dst.Write(buf[:nr])
			n += int64(nw)
			if err != nil {
				return n, nil, err
			}
			switch {
			case nr == len(buf) && big == nil:
				big = sp.p.bufPool.Get().(*[]byte)
				buf = *big
			case nr < smallBuf/2 && big != nil:
				sp.p.bufPool.Put(big)
				big = nil
				buf = *small
			}
		}
		if err != nil {
			return n, err, nil
		}
	}
}
