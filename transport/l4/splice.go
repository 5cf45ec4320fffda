package l4

import (
	"errors"
	"io"
	"net"
	"os"
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

	// A hold (hold.go): once holding, a FIN from the stream pauses the
	// stream-to-TCP direction instead of half-closing the TCP side, and
	// interruptUp pauses the other direction, which then sends its FIN.
	mu          sync.Mutex
	holding     bool
	interrupted bool
	up, down    dirState
}

// dirState is how a direction of a splice ended.
type dirState uint8

const (
	running dirState = iota
	ended            // EOF, passed on as a half-close
	paused           // stopped for a hold; nothing read is left unsent
	failed
)

// spliced is how a splice ended.
type spliced struct {
	toStream, fromStream int64
	idle                 bool // the idle timeout cut the connection
	held                 bool // both directions paused; c is left open
}

// splice runs until both directions end and returns the bytes moved from
// the TCP side to the stream and back, and how it ended. It closes c
// unless the connection was held. se, when not nil, is the session the
// splice belongs to.
func (p *Proxy) splice(c net.Conn, tcp *net.TCPConn, s *tunnel.Stream, se *session) spliced {
	if tcp != nil {
		c = rawio.WrapTCP(tcp)
	}
	sp := &splicer{p: p, c: c, tcp: tcp, s: s}
	if se != nil {
		se.setSplicer(sp)
	}
	sp.touch()
	sp.idle = time.AfterFunc(p.cfg.IdleTimeout, sp.checkIdle)
	defer sp.idle.Stop()

	// The other direction ends before splice returns: no goroutine
	// outlives the call.
	done := make(chan int64, 1)
	go func() { done <- sp.tcpToStream() }()
	r := spliced{fromStream: sp.streamToTCP()}
	r.toStream = <-done
	sp.mu.Lock()
	r.held = sp.up == paused && sp.down == paused
	holding := sp.holding
	sp.mu.Unlock()
	if !r.held {
		if holding {
			sp.abort(tunnel.AbortFailed) // a hold that failed half-way
		}
		c.Close()
	}
	r.idle = sp.idled.Load()
	return r
}

func (sp *splicer) touch() { sp.last.Store(time.Now().UnixNano()) }

// checkIdle aborts the splice when nothing moved for IdleTimeout, and
// otherwise re-arms itself for the remainder. A connection being held is
// never idle.
func (sp *splicer) checkIdle() {
	idle := sp.p.cfg.IdleTimeout
	since := time.Duration(time.Now().UnixNano() - sp.last.Load())
	if since >= idle && !sp.isHolding() {
		sp.p.log.Debug("proxied connection idle, closing", "idle", since)
		sp.idled.Store(true)
		sp.abort(tunnel.AbortIdle)
		return
	}
	next := idle - since
	if next <= 0 {
		next = idle // held: look again later
	}
	sp.idle.Reset(next)
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

// beginHold starts a hold: it reports false when a direction has ended
// already, which a hold cannot carry over.
func (sp *splicer) beginHold() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.holding || sp.up != running || sp.down != running || sp.tcp == nil {
		return false
	}
	sp.holding = true
	return true
}

func (sp *splicer) isHolding() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.holding
}

// cancelHold ends a hold the peer refused: a FIN that came meanwhile was
// the peer's half-close, and is passed on now.
func (sp *splicer) cancelHold() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.holding = false
	if sp.down == paused {
		sp.down = ended
		sp.tcp.CloseWrite()
	}
}

// interruptUp stops the TCP-to-stream direction at its next read: it then
// sends its FIN, which the peer, holding too, takes as a pause.
func (sp *splicer) interruptUp() {
	sp.mu.Lock()
	sp.interrupted = true
	sp.mu.Unlock()
	sp.tcp.SetReadDeadline(time.Now())
}

type halfCloser interface{ CloseWrite() error }

func (sp *splicer) tcpToStream() int64 {
	n, rerr, werr := sp.copy(sp.s, sp.c)
	if !sp.endUp(rerr, werr) {
		sp.abort(tunnel.AbortFailed)
	}
	return n
}

// endUp records how the TCP-to-stream direction ended, sends its FIN when
// it ended cleanly or paused, and reports false when it failed.
func (sp *splicer) endUp(rerr, werr error) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	switch {
	case werr != nil: // the peer stopped reading, or the connection died
	case sp.interrupted && errors.Is(rerr, os.ErrDeadlineExceeded):
		sp.up = paused
		sp.s.CloseWrite() // FIN: the peer, holding, takes it as a pause
		return true
	case sp.holding:
		// The application half-closed as the hold began: a FIN now would
		// read as a pause, and the half-close would be lost.
	case rerr == nil || errors.Is(rerr, io.EOF):
		sp.up = ended
		sp.s.CloseWrite() // FIN: the caller finished sending
		return true
	}
	sp.up = failed
	return false
}

func (sp *splicer) streamToTCP() int64 {
	n, rerr, werr := sp.copy(sp.c, sp.s)
	if !sp.endDown(rerr, werr) {
		sp.abort(tunnel.AbortFailed)
	}
	return n
}

// endDown records how the stream-to-TCP direction ended, half-closes the
// TCP side on a clean end, and reports false when it failed (a write
// error, or the peer reset the stream).
func (sp *splicer) endDown(rerr, werr error) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if werr != nil || (rerr != nil && !errors.Is(rerr, io.EOF)) {
		sp.down = failed
		return false
	}
	if sp.holding {
		sp.down = paused // the peer paused; cancelHold passes it on otherwise
		return true
	}
	sp.down = ended
	if hc, ok := sp.c.(halfCloser); ok {
		hc.CloseWrite()
	}
	return true
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
