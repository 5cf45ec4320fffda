package agent

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"time"

	"github.com/meshwork/meshwork/internal/sockets"
	"github.com/meshwork/meshwork/transport/l4"
)

// heldConnsFile is where, under data_dir, a stop for a systemd restart
// writes the state of the connections it left in the file descriptor
// store (internal/sockets' format, with each connection's state as JSON).
const heldConnsFile = "held-conns.state"

// HeldConnsPath is the file of the state of held connections.
func (a *Agent) HeldConnsPath() string { return filepath.Join(a.cfg.DataDir, heldConnsFile) }

// HoldConns holds the connections the tunnel carries for a successor
// (transport.Transport.Hold: the tunnel stops taking new ones and each
// peer pauses its side) and returns them ready to hand over: each socket
// as a file of its own, with its state as JSON. This agent's descriptors
// of them are closed; the caller hands the files on, then closes them.
func (a *Agent) HoldConns(ctx context.Context) []sockets.HeldConn {
	tr := a.Tunnel()
	if tr == nil {
		return nil
	}
	held := tr.Hold(ctx)
	out := make([]sockets.HeldConn, 0, len(held))
	for _, h := range held {
		hc, err := handable(h)
		if err != nil {
			a.log.Warn("held connection cannot be handed over; reset", "session", h.State.Session, "err", err)
			h.Conn.SetLinger(0)
		} else {
			out = append(out, hc)
		}
		h.Conn.Close()
	}
	return out
}

// handable is h as a successor takes it.
func handable(h l4.HeldConn) (sockets.HeldConn, error) {
	meta, err := json.Marshal(h.State)
	if err != nil {
		return sockets.HeldConn{}, err
	}
	f, err := h.Conn.File()
	if err != nil {
		return sockets.HeldConn{}, err
	}
	return sockets.HeldConn{Name: h.State.Session, File: f, Meta: meta}, nil
}

// resumeWait bounds the wait for the tunnel before held connections are
// resumed; their peers keep them for 30 s.
const resumeWait = 20 * time.Second

// ResumeConns carries on the connections a predecessor held, with the
// state it handed over, once the tunnel serves (within resumeWait). It
// returns at once. A connection whose state is damaged is reset.
func (a *Agent) ResumeConns(ctx context.Context, conns []sockets.HeldConn) {
	if len(conns) == 0 {
		return
	}
	go func() {
		t := time.NewTimer(resumeWait)
		defer t.Stop()
		select {
		case <-a.TunnelReady():
		case <-t.C:
		case <-ctx.Done():
		}
		a.resumeConns(conns)
	}()
}

func (a *Agent) resumeConns(conns []sockets.HeldConn) {
	tr := a.Tunnel()
	for _, hc := range conns {
		c, err := net.FileConn(hc.File)
		hc.File.Close()
		if err != nil {
			a.log.Warn("handed-over connection is not a socket; dropped", "name", hc.Name, "err", err)
			continue
		}
		tcp, ok := c.(*net.TCPConn)
		var st l4.HeldState
		switch {
		case !ok:
			err = errNotTCP
		case tr == nil:
			err = errNoTunnel
		default:
			err = json.Unmarshal(hc.Meta, &st)
			if err == nil && st.Session != hc.Name {
				err = errNameMismatch
			}
		}
		if err != nil {
			a.log.Warn("handed-over connection cannot be resumed; reset", "name", hc.Name, "err", err)
			ResetConn(c)
			continue
		}
		tr.Resume(st, tcp)
	}
	a.log.Info("resuming connections held by the previous agent", "count", len(conns))
}

// ResetConn closes c with a reset, so that its application sees a failure
// rather than an end.
func ResetConn(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	c.Close()
}

type heldConnError string

func (e heldConnError) Error() string { return string(e) }

const (
	errNotTCP       heldConnError = "not a TCP connection"
	errNoTunnel     heldConnError = "the tunnel is not running"
	errNameMismatch heldConnError = "its state names another session"
)
