package l7

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// switched reports whether resp, to req, turns the exchange into a byte
// stream: 101 to an Upgrade, 2xx to a CONNECT.
func switched(req *http.Request, resp *http.Response) bool {
	if req.Method == http.MethodConnect {
		return resp.StatusCode/100 == 2
	}
	return resp.StatusCode == http.StatusSwitchingProtocols
}

// serveUpgrade carries an Upgrade (WebSocket) or CONNECT request of an
// application: as a request while the app decides, then, once it switched,
// as a byte stream in both directions on the same QUIC stream, as the
// per-connection path carries connections. The request's budget bounds the
// handshake only.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, rt Router) {
	c := &call{p: p, w: w, r: r, rt: rt}
	ctx, cancel, merr := c.budget()
	if cancel != nil {
		defer cancel()
	}
	if merr != nil {
		c.fail(merr)
		return
	}
	delete(r.Header, DeadlineHeader)
	keepUserAgent(r.Header)
	preq := policy.Request{Method: r.Method, Path: r.URL.Path, Header: headerOf(r.Header)}
	att, err := rt.Open(ctx, preq, c.trace, nil)
	if err != nil {
		c.fail(openError(ctx, err, c.caller))
		return
	}
	s := att.Stream
	stop := context.AfterFunc(ctx, func() { s.Abort(tunnel.AbortFailed) })
	t0 := time.Now()
	bw := p.getWriter(s)
	err = r.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	p.putWriter(bw)
	br := p.getReader(s)
	defer p.putReader(br)
	if err == nil {
		err = s.Status(br)
	}
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(br, r)
	}
	if err != nil {
		stop()
		s.Abort(tunnel.AbortFailed)
		att.Done(time.Since(t0), true)
		c.fail(openError(ctx, err, c.caller))
		return
	}
	latency := time.Since(t0)
	if !switched(r, resp) {
		stop()
		failed := resp.StatusCode >= 500
		if p.relay(w, resp, br, ctx) != nil {
			failed = true
			s.Abort(tunnel.AbortFailed)
		}
		s.CloseWrite()
		att.Done(latency, failed)
		p.m.requests.WithLabelValues(outbound, class(resp.StatusCode)).Inc()
		return
	}
	if !stop() {
		// The budget ran out as the answer came: the stream is aborted.
		att.Done(latency, true)
		c.fail(timeoutError(c.caller, "the upgrade was answered too late"))
		return
	}
	p.m.requests.WithLabelValues(outbound, class(resp.StatusCode)).Inc()
	p.m.upgrades.WithLabelValues(outbound).Inc()
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 (a CONNECT stream) cannot be hijacked: carry it on the
		// request's body and the response.
		p.duplexHTTP2(w, r, resp, br, s)
		att.Done(latency, false)
		return
	}
	defer conn.Close()
	if err := writeHead(rw.Writer, resp); err != nil {
		s.Abort(tunnel.AbortFailed)
		att.Done(latency, true)
		return
	}
	p.splice(conn, rw.Reader, s, br, p.idleOf(rt.Destination()))
	att.Done(latency, false)
}

// idleOf is the idle timeout of a switched stream to service.
func (p *Proxy) idleOf(service string) time.Duration {
	if res := p.deps.Resilience(service); res.Timeouts != nil && res.Timeouts.Idle > 0 {
		return time.Duration(res.Timeouts.Idle)
	}
	return p.cfg.IdleTimeout
}

// duplexHTTP2 carries a switched CONNECT of an HTTP/2 application: the
// request body goes up the stream, the stream's bytes come down as the
// response body.
func (p *Proxy) duplexHTTP2(w http.ResponseWriter, r *http.Request, resp *http.Response, br *bufio.Reader, s *tunnel.Stream) {
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	up := make(chan struct{})
	go func() {
		defer close(up)
		if _, err := io.Copy(s, r.Body); err != nil {
			s.Abort(tunnel.AbortFailed)
			return
		}
		s.CloseWrite()
	}()
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	for {
		n, err := br.Read(*bp)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil || rc.Flush() != nil {
				s.Abort(tunnel.AbortFailed)
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				s.Abort(tunnel.AbortFailed)
			}
			break
		}
	}
	<-up
}

// serveUpgradeIn forwards an Upgrade or CONNECT request read from a stream
// to the local app on a connection of its own; once the app switched, it
// splices the stream and that connection. release ends the budget's hold
// on the stream: a switched stream lives past the handshake's budget.
func (p *Proxy) serveUpgradeIn(ctx context.Context, s *tunnel.Stream, br *bufio.Reader, req *http.Request,
	in *tunnel.Inbound, release func() bool, fail func(*meshError)) {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.LocalDialTimeout)
	conn, err := p.deps.DialLocal(dctx, "tcp", in.Target.Addr.String())
	cancel()
	if err != nil {
		fail(appError(ctx, &net.OpError{Op: "dial", Net: "tcp", Err: err}, true))
		return
	}
	defer conn.Close()
	stopConn := context.AfterFunc(ctx, func() { conn.Close() })
	keepUserAgent(req.Header)
	abr := bufio.NewReader(conn)
	err = req.Write(conn)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(abr, req)
	}
	if err != nil {
		stopConn()
		fail(appError(ctx, err, true))
		return
	}
	if !switched(req, resp) {
		stopConn()
		bw := p.getWriter(s)
		err := p.writeResponse(bw, resp)
		p.putWriter(bw)
		resp.Body.Close()
		if err != nil {
			s.Abort(tunnel.AbortFailed)
			return
		}
		s.CloseWrite()
		p.m.requests.WithLabelValues(inbound, class(resp.StatusCode)).Inc()
		return
	}
	if !stopConn() || !release() {
		fail(timeoutError(true, "the app switched protocols too late"))
		return
	}
	p.m.requests.WithLabelValues(inbound, class(resp.StatusCode)).Inc()
	p.m.upgrades.WithLabelValues(inbound).Inc()
	bw := p.getWriter(s)
	err = writeHead(bw, resp)
	p.putWriter(bw)
	if err != nil {
		s.Abort(tunnel.AbortFailed)
		return
	}
	p.splice(conn, abr, s, br, p.idleOf(in.Target.Service))
}

// writeHead writes the head of a switching answer, and flushes.
func writeHead(bw *bufio.Writer, resp *http.Response) error {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(resp.Status)
	bw.WriteString("\r\n")
	if err := resp.Header.Write(bw); err != nil {
		return err
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// splice copies both ways between a connection (read through cr, which
// holds what was read ahead) and a stream (read through sr) until both
// directions end, keeping half-close. Nothing moving either way for idle
// ends both.
func (p *Proxy) splice(c net.Conn, cr io.Reader, s *tunnel.Stream, sr io.Reader, idle time.Duration) {
	timer := time.AfterFunc(idle, func() {
		s.Abort(tunnel.AbortIdle)
		c.Close()
	})
	defer timer.Stop()
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst io.Writer, src io.Reader, end func() error, fail func()) {
		defer wg.Done()
		bp := p.bufs.Get().(*[]byte)
		defer p.bufs.Put(bp)
		for {
			n, err := src.Read(*bp)
			if n > 0 {
				timer.Reset(idle)
				if _, werr := dst.Write((*bp)[:n]); werr != nil {
					fail()
					return
				}
			}
			if err == io.EOF {
				end()
				return
			}
			if err != nil {
				fail()
				return
			}
		}
	}
	abort := func() {
		s.Abort(tunnel.AbortFailed)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
	go cp(s, cr, s.CloseWrite, abort)
	go cp(c, sr, func() error { return closeWrite(c) }, abort)
	wg.Wait()
}

// closeWrite half-closes c, or closes it if it cannot.
func closeWrite(c net.Conn) error {
	type writeCloser interface{ CloseWrite() error }
	if wc, ok := c.(writeCloser); ok {
		return wc.CloseWrite()
	}
	if ac, ok := c.(*appConn); ok {
		return ac.TCPConn.CloseWrite()
	}
	return c.Close()
}

// headerOf is a policy.Request's header lookup over h.
func headerOf(h http.Header) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v := h.Values(name)
		if len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
}
