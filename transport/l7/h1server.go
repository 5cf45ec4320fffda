package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/rawio"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// h2Preface starts every HTTP/2 connection with prior knowledge; no
// HTTP/1.1 request starts with "PRI ".
const h2Preface = "PRI "

// ServeConn serves an application's connection until it closes; each
// request is routed through conn, which must be a Router. HTTP/1.1 is
// served here, on the connection's goroutine, with net/http's
// ReadRequest and Response.Write; HTTP/2 with prior knowledge (h2c,
// gRPC) by net/http's server.
func (p *Proxy) ServeConn(ctx context.Context, c *net.TCPConn, conn tunnel.Connector) {
	rt, ok := conn.(Router)
	if !ok {
		p.log.Error("connector cannot route requests; connection closed", "remote", c.RemoteAddr().String())
		c.Close()
		return
	}
	if !p.conns.Add(c) {
		return
	}
	defer p.conns.Remove(c)
	rc := rawio.WrapTCP(c)
	hl := limitHead(rc, -1)
	br := p.getReader(hl)
	c.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
	first, err := br.Peek(len(h2Preface))
	if err != nil {
		p.putReader(br)
		c.Close()
		return
	}
	if string(first) == h2Preface {
		c.SetReadDeadline(time.Time{})
		p.serveH2(ctx, c, br, rt) // br holds the preface: not pooled again
		return
	}
	clean := p.serveH1(ctx, rc, hl, br, rt)
	c.Close()
	if clean {
		p.putReader(br)
	}
}

// serveH2 hands an h2c connection, whose first bytes br holds, to the
// HTTP server, and waits for it to end.
func (p *Proxy) serveH2(ctx context.Context, c *net.TCPConn, br *bufio.Reader, rt Router) {
	ac := &appConn{TCPConn: c, r: br, router: rt, done: make(chan struct{})}
	if !p.ln.push(ac) {
		ac.Close()
		return
	}
	select {
	case <-ac.done:
	case <-ctx.Done():
		ac.Close()
	}
}

// serveH1 serves HTTP/1.1 requests on c, read through br (over hl, which
// bounds each request's head), one after the other, each answer written
// whole before the next request is read. It returns whether br may be
// reused: false while a request body may still be read from it.
func (p *Proxy) serveH1(ctx context.Context, c net.Conn, hl *headLimit, br *bufio.Reader, rt Router) (clean bool) {
	bw := p.getWriter(c)
	defer p.putWriter(bw)
	for {
		c.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
		if _, err := br.Peek(1); err != nil {
			return true // closed, or idle too long
		}
		c.SetReadDeadline(time.Now().Add(p.cfg.HeaderTimeout))
		hl.n = p.cfg.MaxHeaderBytes
		req, err := http.ReadRequest(br)
		hl.n = -1
		c.SetReadDeadline(time.Time{})
		if err != nil {
			p.badRequest(bw, err, rt)
			return false
		}
		req = req.WithContext(ctx)
		p.m.active.WithLabelValues(outbound).Inc()
		keep, clean := p.serveRequest(c, br, bw, req, rt)
		p.m.active.WithLabelValues(outbound).Dec()
		if !keep {
			return clean
		}
	}
}

// serveRequest carries one HTTP/1.1 request and writes its answer. keep is
// false when the connection must close; clean is false when its reader
// may still be in use.
func (p *Proxy) serveRequest(c net.Conn, br *bufio.Reader, bw *bufio.Writer, req *http.Request, rt Router) (keep, clean bool) {
	if req.Method == http.MethodConnect || isUpgrade(req.Header) {
		p.upgradeH1(c, br, bw, req, rt)
		return false, false
	}
	if httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
		delete(req.Header, "Expect")
		if req.ContentLength != 0 {
			// Sent before the body is asked for: the request travels
			// pipelined, its body right behind its head.
			bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if bw.Flush() != nil {
				return false, true
			}
		}
	}
	keep = req.ProtoAtLeast(1, 1) && !req.Close
	// The receiving agent writes its answer as HTTP/1.1, whole and framed,
	// and ends the stream after it: an HTTP/1.1 application can have those
	// bytes as they are.
	call := &call{p: p, r: req, rt: rt, grpc: isGRPC(req.Header), verbatim: req.ProtoAtLeast(1, 1)}
	call.begin()
	defer call.end()
	resp, me := call.send()
	if me != nil {
		call.fail(me)
		resp = me.response(req, call.grpc)
		if call.streamed != nil && !call.streamed.eof.Load() {
			// A streamed body the mesh did not send: where the next
			// request starts is unknown without reading it all.
			keep = false
		}
	}
	var err error
	if me == nil && call.verbatim {
		call.obs.BytesOut, err = p.copyVerbatim(c, call.br)
	} else {
		call.obs.BytesOut, err = p.writeAnswer(bw, resp, req, keep)
	}
	if err != nil {
		call.failed = true
		call.abort()
		if call.obs.MeshError == "" {
			call.obs.MeshError = ReasonUpstreamReset
		}
		return false, call.uploaded()
	}
	call.end()
	if !call.uploaded() {
		// The answer came before the whole request body was read: the
		// next request's start is unknown.
		return false, false
	}
	return keep && !resp.Close, true
}

// writeAnswer writes resp to an HTTP/1.x application: chunked for HTTP/1.1
// when its length is unknown, closing the connection afterwards for
// HTTP/1.0 or when keep is false.
func (p *Proxy) writeAnswer(bw *bufio.Writer, resp *http.Response, req *http.Request, keep bool) (int64, error) {
	if !req.ProtoAtLeast(1, 1) {
		removeHopHeaders(resp.Header)
		resp.ProtoMajor, resp.ProtoMinor, resp.Proto = 1, 0, "HTTP/1.0"
		resp.TransferEncoding, resp.Trailer, resp.Close = nil, nil, true
		return p.writeWithBody(bw, resp)
	}
	resp.Close = !keep
	return p.writeResponse(bw, resp)
}

// badRequest answers a request head that could not be read, unless the
// application simply went away, and records it.
func (p *Proxy) badRequest(bw *bufio.Writer, err error, rt Router) {
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return
	}
	status := http.StatusBadRequest
	if errors.Is(err, errHeadTooLarge) {
		status = http.StatusRequestHeaderFieldsTooLarge
	}
	me := &meshError{status, ReasonBadRequest, "the request cannot be read: " + err.Error()}
	p.m.meshErrors.WithLabelValues(outbound, me.reason).Inc()
	p.log.Info("request unreadable", "err", err)
	o := &observe.Call{Direction: observe.Outbound, Protocol: observe.HTTP, Start: time.Now(), GRPCStatus: -1}
	rt.Describe(o)
	p.beginRecord(o)
	recordMeshError(o, me, false)
	resp := me.response(&http.Request{Method: http.MethodGet}, false)
	resp.Close = true
	o.BytesOut, _ = p.writeResponse(bw, resp) // the connection closes after it either way
	p.endRecord(o)
}

// upgradeH1 carries an Upgrade or CONNECT request of an HTTP/1.1
// application; once the app switched, the connection is spliced with the
// request's stream until both directions end.
func (p *Proxy) upgradeH1(c net.Conn, br *bufio.Reader, bw *bufio.Writer, req *http.Request, rt Router) {
	call := &call{p: p, r: req, rt: rt}
	call.begin()
	defer call.end()
	resp, me := call.sendUpgrade()
	if me != nil {
		call.fail(me)
		resp := me.response(req, false)
		resp.Close = true
		call.obs.BytesOut, _ = p.writeResponse(bw, resp)
		return
	}
	if !switched(req, resp) {
		resp.Close = true
		call.obs.BytesOut, _ = p.writeResponse(bw, resp)
		return
	}
	if writeHead(bw, resp) != nil {
		call.abort()
		return
	}
	call.obs.BytesIn, call.obs.BytesOut = p.splice(c, br, call.stream, call.br, p.idleOf(rt.Destination()))
}

// copyVerbatim copies an answer from the stream (through br) to the
// application as it comes, until the stream ends. It returns the bytes
// written after the answer's head: its body, chunk framing and trailers
// included.
func (p *Proxy) copyVerbatim(c net.Conn, br *bufio.Reader) (body int64, err error) {
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	var head headEnd
	for {
		n, err := br.Read(*bp)
		if n > 0 {
			m, werr := c.Write((*bp)[:n])
			body += head.skip((*bp)[:m])
			if werr != nil {
				return body, werr
			}
		}
		if err == io.EOF {
			return body, nil
		}
		if err != nil {
			return body, err
		}
	}
}

// headEnd finds the end of an answer's head ("\r\n\r\n") in the bytes
// of the answer as they pass.
type headEnd struct {
	matched int  // bytes of "\r\n\r\n" seen last
	done    bool // the head is passed
}

// skip consumes b and returns how many of its bytes follow the head.
func (h *headEnd) skip(b []byte) int64 {
	if h.done {
		return int64(len(b))
	}
	for i, c := range b {
		switch {
		case c == "\r\n\r\n"[h.matched]:
			h.matched++
		case c == '\r':
			h.matched = 1
		default:
			h.matched = 0
		}
		if h.matched == 4 {
			h.done = true
			return int64(len(b) - i - 1)
		}
	}
	return 0
}
