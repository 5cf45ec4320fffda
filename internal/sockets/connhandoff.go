package sockets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Connections travel to a successor on the socket of HandoffConnsEnv, one
// message each: an entry (conns.go) as the body, the socket as SCM_RIGHTS.

// connsHello is the one message a successor sends back on that socket, in
// Inherit, before it says it is prepared: that it reads connections, and in
// which format. A successor that does not send it (a binary from before
// connections were carried, as in a rollback) would leave them unread in
// its socket buffer, open and never resumed; SendConns sends it none.
const connsHello = "meshwork-conns/1"

// ErrSuccessorTakesNoConns is returned by SendConns when the successor did
// not say that it reads connections: an older binary. Nothing was sent.
var ErrSuccessorTakesNoConns = errors.New("sockets: the successor does not take connections")

// connPair returns the two ends of the socket a handoff carries
// connections on, this process's and the successor's, both non-blocking
// and close-on-exec. os.NewFile registers a non-blocking descriptor with
// the poller, so that a send or receive blocked on the socket ends when
// its file is closed (Abort, TakeConns's ctx).
func connPair() (local, remote *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fds[0])
			syscall.Close(fds[1])
			return nil, nil, err
		}
	}
	return os.NewFile(uintptr(fds[0]), "handoff-conns"), os.NewFile(uintptr(fds[1]), "handoff-conns"), nil
}

// SendConns hands the connections to a successor started by StartSuccessor, over a
// SOCK_SEQPACKET unix socket pair that StartSuccessor now creates and passes with the other
// descriptors (a new env variable, e.g. MESHWORK_HANDOFF_CONNS_FD). One message per connection:
// the name and meta in the body, the descriptor as SCM_RIGHTS. Call it before Successor.Start;
// it may be called once. Start (and Abort) close this side, so the successor sees the end even
// when SendConns was never called. Returns how many were sent.
//
// It sends nothing to a successor that did not say it takes connections
// (ErrSuccessorTakesNoConns: an older binary, as in a rollback). It stops
// at the first connection that cannot be carried (ErrBadHeldConn) or sent;
// the ones from there on stay with the caller. It blocks while the
// successor's socket buffer is full, which its reader drains from Inherit
// on; Abort, from another goroutine, ends a send that would block for good.
// The caller closes its own sockets afterwards: the successor's copies keep
// the connections open.
func (p *Successor) SendConns(conns []HeldConn) (int, error) {
	p.connsMu.Lock()
	w, used := p.connsW, p.connsUsed
	p.connsUsed = true
	p.connsMu.Unlock()
	switch {
	case used:
		return 0, errors.New("sockets: send connections: called twice")
	case w == nil:
		return 0, errors.New("sockets: send connections: the successor has started or was aborted")
	}
	if len(conns) == 0 {
		return 0, nil
	}
	wc, err := w.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("sockets: send connections: %w", err)
	}
	if err := p.hello(wc); err != nil {
		return 0, err
	}
	valid, verr := checkHeldConns(conns)
	body := make([]byte, 0, maxConnEntry)
	for i, c := range conns[:valid] {
		body = appendConnEntry(body[:0], c.Name, c.Meta)
		if err := sendConn(wc, body, c.File); err != nil {
			return i, fmt.Errorf("sockets: send connection %s: %w", c.Name, err)
		}
	}
	if verr != nil {
		return valid, fmt.Errorf("sockets: send connections: %w", verr)
	}
	return valid, nil
}

// TakesConns reports whether the successor said it takes connections
// (SendConns would send them): check it before holding connections for
// it, as an older binary would leave them unresumed.
func (p *Successor) TakesConns() bool {
	p.connsMu.Lock()
	w := p.connsW
	p.connsMu.Unlock()
	if w == nil {
		return false
	}
	wc, err := w.SyscallConn()
	return err == nil && p.hello(wc) == nil
}

// hello reads the successor's connsHello once, and remembers the answer.
func (p *Successor) hello(wc syscall.RawConn) error {
	p.helloOnce.Do(func() { p.helloErr = readHello(wc) })
	return p.helloErr
}

// readHello reads the successor's connsHello, which it sent before it said
// it was prepared, without waiting for it.
func readHello(wc syscall.RawConn) error {
	buf := make([]byte, len(connsHello)+1)
	var n int
	var rerr error
	if err := wc.Control(func(fd uintptr) {
		for {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if rerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("sockets: send connections: %w", err)
	}
	switch {
	case rerr == unix.EAGAIN:
		return fmt.Errorf("%w (it did not say so; a binary that predates it?)", ErrSuccessorTakesNoConns)
	case rerr != nil:
		return fmt.Errorf("sockets: send connections: %w", rerr)
	case string(buf[:n]) != connsHello:
		return fmt.Errorf("%w: it reads %q, want %q", ErrSuccessorTakesNoConns, buf[:n], connsHello)
	}
	return nil
}

// sendConn sends one message, body with f's descriptor, on the socket wc.
func sendConn(wc syscall.RawConn, body []byte, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		oob := syscall.UnixRights(int(fd))
		werr := wc.Write(func(w uintptr) bool {
			for {
				serr = unix.Sendmsg(int(w), body, oob, nil, unix.MSG_NOSIGNAL)
				if serr != unix.EINTR {
					return serr != unix.EAGAIN
				}
			}
		})
		if serr == nil {
			serr = werr
		}
	})
	if cerr != nil {
		return cerr
	}
	return serr
}

// closeConns closes this process's side of the connections' socket: the
// successor's reader sees the end of what is sent.
func (p *Successor) closeConns() {
	p.connsMu.Lock()
	w := p.connsW
	p.connsW = nil
	p.connsMu.Unlock()
	if w != nil {
		w.Close()
	}
}

// connReceiver reads the connections a predecessor sends, from Inherit on:
// the predecessor sends them all before it lets this process start, and
// both would wait for good on a full socket buffer if nobody read it until
// TakeConns.
type connReceiver struct {
	log  *slog.Logger
	sock *os.File
	done chan struct{} // closed when run returns
	// stopping is set when take closes sock: the read that fails then is
	// not an error worth a log line.
	stopping atomic.Bool

	mu    sync.Mutex
	conns []HeldConn
}

// maxFDsPerConnMsg is how many descriptors a message may bring without
// its control data being cut; a message has one, and any more are refused.
const maxFDsPerConnMsg = 4

// receiveConns tells the predecessor that this process reads connections
// (connsHello) and starts reading those sent on sock, which it closes at
// the end. sock must be a non-blocking descriptor's file (connPair,
// connsFD): take could not end a blocking read.
func receiveConns(logger *slog.Logger, sock *os.File) *connReceiver {
	r := &connReceiver{log: logger, sock: sock, done: make(chan struct{})}
	rc, err := sock.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			// An empty socket buffer takes it at once.
			serr = unix.Send(int(fd), []byte(connsHello), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		})
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		logger.Warn("cannot tell the predecessor that this process takes connections; it sends none", "err", err)
	}
	go r.run()
	return r
}

func (r *connReceiver) run() {
	defer close(r.done)
	defer r.sock.Close()
	rc, err := r.sock.SyscallConn()
	if err != nil {
		r.log.Error("cannot read the connections the predecessor sends", "err", err)
		return
	}
	names := map[string]bool{}
	buf := make([]byte, maxConnEntry+1) // one more: a longer body is cut (MSG_TRUNC)
	oob := make([]byte, syscall.CmsgSpace(maxFDsPerConnMsg*4))
	for {
		var n, oobn, flags int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
				if rerr != unix.EINTR {
					return rerr != unix.EAGAIN
				}
			}
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if !r.stopping.Load() {
				r.log.Error("reading the connections the predecessor sends failed; those not read yet are lost", "err", err)
			}
			return
		}
		if n == 0 && oobn == 0 {
			return // the predecessor closed its side
		}
		fds, ferr := parseRights(oob[:oobn])
		c, err := r.decode(buf[:n], flags, fds, ferr, len(names))
		if err == nil && names[c.Name] {
			err = fmt.Errorf("%w: %s: sent twice", ErrBadConnState, c.Name)
		}
		if err != nil {
			r.log.Error("connection from the predecessor refused; reset", "err", err)
			for _, fd := range fds {
				resetClose(os.NewFile(uintptr(fd), "refused-conn"))
			}
			continue
		}
		names[c.Name] = true
		c.File = os.NewFile(uintptr(fds[0]), connFDPrefix+c.Name)
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
	}
}

// decode checks one message: its flags and descriptors, and its body.
// have is how many connections came before it.
func (r *connReceiver) decode(body []byte, flags int, fds []int, ferr error, have int) (HeldConn, error) {
	switch {
	case ferr != nil:
		return HeldConn{}, fmt.Errorf("%w: control data: %w", ErrBadConnState, ferr)
	case flags&unix.MSG_CTRUNC != 0:
		return HeldConn{}, fmt.Errorf("%w: more than %d descriptors in one message, want 1", ErrBadConnState, maxFDsPerConnMsg)
	case flags&unix.MSG_TRUNC != 0:
		return HeldConn{}, fmt.Errorf("%w: message longer than %d bytes", ErrBadConnState, maxConnEntry)
	case len(fds) != 1:
		return HeldConn{}, fmt.Errorf("%w: %d descriptors in one message, want 1", ErrBadConnState, len(fds))
	case have >= maxHeldConns:
		return HeldConn{}, fmt.Errorf("%w: more than %d connections", ErrBadConnState, maxHeldConns)
	}
	name, meta, err := decodeConnMessage(body)
	if err != nil {
		return HeldConn{}, err
	}
	typ, err := syscall.GetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil || typ != syscall.SOCK_STREAM {
		return HeldConn{}, fmt.Errorf("%w: %s: the descriptor is not a stream socket (type %d, %v)", ErrBadConnState, name, typ, err)
	}
	return HeldConn{Name: name, Meta: meta}, nil
}

// parseRights returns the descriptors of SCM_RIGHTS control messages.
// Every descriptor received is returned, even with an error, so that the
// caller closes it.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	var errs []error
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, errors.Join(errs...)
}

// take waits until the predecessor has closed its side, or ctx ends, and
// returns the connections received. After ctx ended it stops reading: the
// predecessor's further sends fail.
func (r *connReceiver) take(ctx context.Context) ([]HeldConn, error) {
	var err error
	select {
	case <-r.done:
	case <-ctx.Done():
		r.stopping.Store(true)
		r.sock.Close()
		<-r.done
		err = fmt.Errorf("the predecessor did not finish sending connections: %w", ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.conns
	r.conns = nil
	return out, err
}
