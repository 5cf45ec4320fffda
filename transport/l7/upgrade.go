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
	"github.com/meshwork/meshwork/transport/observe"
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

// sendUpgrade sends an Upgrade (WebSocket) or CONNECT request of an
// application and reads the answer's head: a request while the app
// decides; once it switched (see switched), the caller splices the
// application's side with c.stream, read through c.br, as the
// per-connection path carries connections. The request's budget bounds
// the handshake only. end must be called afterwards.
func (c *call) sendUpgrade() (*http.Response, *meshError) {
	p, r := c.p, c.r
	ctx, cancel, me := c.budget()
	c.cancel = cancel
	if me != nil {
		return nil, me
	}
	delete(r.Header, DeadlineHeader)
	keepUserAgent(r.Header)
	preq := policy.Request{Method: r.Method, Path: r.URL.Path, Header: headerOf(r.Header)}
	c.obs.Attempts = 1
	att, err := c.rt.Open(ctx, preq, c.trace, nil)
	if err != nil {
		return nil, openError(ctx, err, c.caller)
	}
	c.obs.Route, c.obs.Instance = att.Route, att.Instance
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
		p.putReader(br)
		att.Done(time.Since(t0), true)
		return nil, openError(ctx, err, c.caller)
	}
	latency := time.Since(t0)
	if !stop() {
		// The budget ran out as the answer came: the stream is aborted.
		p.putReader(br)
		att.Done(latency, true)
		return nil, timeoutError(c.caller, "the upgrade was answered too late")
	}
	p.m.requests.WithLabelValues(outbound, class(resp.StatusCode)).Inc()
	if switched(r, resp) {
		p.m.upgrades.WithLabelValues(outbound).Inc()
	}
	c.br, c.stream, c.failed = br, s, resp.StatusCode >= 500
	c.obs.Status = resp.StatusCode
	if v := resp.Header[ErrorHeader]; len(v) > 0 {
		c.obs.MeshError = knownReason([]byte(v[0]))
	}
	c.finish = func() {
		resp.Body.Close()
		s.CloseWrite()
		p.putReader(br)
		att.Done(latency, c.failed)
	}
	return resp, nil
}

// serveConnect carries a CONNECT request of an HTTP/2 application, which
// cannot be hijacked: the request body goes up the stream and the
// stream's bytes come down as the answer's body.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request, rt Router) {
	c := &call{p: p, r: r, rt: rt}
	c.begin()
	defer c.end()
	resp, me := c.sendUpgrade()
	if me != nil {
		c.fail(me)
		me.write(w, false)
		return
	}
	if !switched(r, resp) {
		var err error
		if c.obs.BytesOut, err = p.relay(w, resp, c.br, r.Context()); err != nil {
			c.failed = true
			c.abort()
		}
		return
	}
	c.obs.BytesIn, c.obs.BytesOut = p.duplexHTTP2(w, r, resp, c.br, c.stream)
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
// response body. It returns the bytes carried up and down.
func (p *Proxy) duplexHTTP2(w http.ResponseWriter, r *http.Request, resp *http.Response, br *bufio.Reader, s *tunnel.Stream) (up, down int64) {
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		var err error
		if up, err = io.Copy(s, r.Body); err != nil {
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
			m, werr := w.Write((*bp)[:n])
			down += int64(m)
			if werr != nil || rc.Flush() != nil {
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
	<-upDone
	return up, down
}

// serveUpgradeIn forwards an Upgrade or CONNECT request read from a stream
// to the local app on a connection of its own; once the app switched, it
// splices the stream and that connection. The budget bounds the
// handshake only.
func (p *Proxy) serveUpgradeIn(ctx context.Context, s *tunnel.Stream, br *bufio.Reader, req *http.Request,
	in *tunnel.Inbound, o *observe.Call, fail func(*meshError)) {
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
	o.Status = resp.StatusCode
	if !switched(req, resp) {
		stopConn()
		bw := p.getWriter(s)
		var err error
		o.BytesOut, err = p.writeResponse(bw, resp)
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
	if !stopConn() {
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
	// The caller's bytes come from the stream, the app's from conn.
	o.BytesOut, o.BytesIn = p.splice(conn, abr, s, br, p.idleOf(in.Target.Service))
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
// ends both. It returns the bytes copied from the connection to the
// stream and back.
func (p *Proxy) splice(c net.Conn, cr io.Reader, s *tunnel.Stream, sr io.Reader, idle time.Duration) (toStream, fromStream int64) {
	timer := time.AfterFunc(idle, func() {
		s.Abort(tunnel.AbortIdle)
		c.Close()
	})
	defer timer.Stop()
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst io.Writer, src io.Reader, copied *int64, end func() error, fail func()) {
		defer wg.Done()
		bp := p.bufs.Get().(*[]byte)
		defer p.bufs.Put(bp)
		for {
			n, err := src.Read(*bp)
			if n > 0 {
				timer.Reset(idle)
				m, werr := dst.Write((*bp)[:n])
				*copied += int64(m)
				if werr != nil {
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
	go cp(s, cr, &toStream, s.CloseWrite, abort)
	go cp(c, sr, &fromStream, func() error { return closeWrite(c) }, abort)
	wg.Wait()
	return toStream, fromStream
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
