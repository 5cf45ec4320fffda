package l7

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/spans"
	"github.com/meshwork/meshwork/transport/tunnel"
)

// ServeStream serves an admitted stream that carries one request: it reads
// the request, applies the intentions, forwards it to the local app within
// the caller's budget, and writes the app's answer back.
func (p *Proxy) ServeStream(ctx context.Context, in *tunnel.Inbound) {
	s, err := in.Accept()
	if err != nil {
		return
	}
	p.m.active.WithLabelValues(inbound).Inc()
	defer p.m.active.WithLabelValues(inbound).Dec()
	svc := in.Target.Service
	proto := p.deps.Protocol(svc)
	ir := p.records.Get().(*inboundRecord)
	o := &ir.call
	*o = observe.Call{
		Direction: observe.Inbound, Protocol: protocolOf(proto == policy.ProtocolGRPC), Start: in.Start,
		Source: in.Target.Source.Service, SourceIdentity: in.Target.Source.ID,
		Destination: svc, DestinationIdentity: p.serviceID(svc),
		Instance: p.addrName(in.Target.Addr), GRPCStatus: -1,
		Trace: spans.Server(in.Header.Trace, p.cfg.TraceSampleRate),
	}
	var body *eofBody // the request's body, when it has one
	defer func() {
		if body != nil {
			o.BytesIn = body.n.Load()
		}
		p.endRecord(o)
		*ir = inboundRecord{}
		p.records.Put(ir)
	}()
	// The budget runs from when the header was read.
	has := in.Header.Timeout > 0
	if has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, in.Start.Add(in.Header.Timeout))
		defer cancel()
	}
	// A caller that gives up (its app left, its budget ran out) stops
	// reading the stream: the app's request is cancelled with it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.Context(), cancel)()
	// Until the app answers, the exchange with it ends with the budget
	// and the caller gets a 504; once the answer streams, the budget's end
	// cuts the stream.
	stop := func() bool { return true }
	defer func() { stop() }()

	hl := limitHead(s, p.cfg.MaxHeaderBytes)
	br := p.getReader(hl)
	defer func() {
		// An app's pool may still be reading a body it did not wait for
		// (HTTP/2 sends it from a goroutine of its own): then br is left
		// to it, and not pooled.
		if body == nil || body.eof.Load() {
			p.putReader(br)
		} else {
			// The answer is sent; what is left of the body is not wanted.
			s.CancelRead(tunnel.AbortFailed)
		}
	}()
	s.SetReadDeadline(time.Now().Add(p.cfg.HeaderTimeout))
	req, err := http.ReadRequest(br)
	s.SetReadDeadline(time.Time{})
	if err == nil && isGRPC(req.Header) {
		o.Protocol = observe.GRPC
	}
	p.beginRecord(o)
	if err == nil && req.Body != nil && req.Body != http.NoBody {
		body = &eofBody{ReadCloser: req.Body}
		req.Body = body
	}
	if err != nil {
		p.log.Info("request unreadable; stream aborted", "service", svc, "source", in.Header.Source, "err", err)
		p.m.meshErrors.WithLabelValues(inbound, ReasonBadRequest).Inc()
		o.MeshError = ReasonBadRequest
		s.Abort(tunnel.AbortFailed)
		return
	}
	hl.n = -1
	grpc := o.Protocol == observe.GRPC
	describeRequest(o, req)
	// The app's span is a child of this agent's server span, whatever
	// the caller's app sent.
	// Not pooled: the client to the app (HTTP/2's writer goroutine) may
	// still read the request's headers after ServeStream returns.
	req.Header["Traceparent"] = []string{spans.Traceparent(o.Trace)}
	answer := func(resp *http.Response) {
		resp.Close = false // the stream's end ends the answer
		bw := p.getWriter(s)
		var err error
		o.BytesOut, err = p.writeResponse(bw, resp)
		p.putWriter(bw)
		if !stop() || err != nil {
			s.Abort(tunnel.AbortFailed)
			return
		}
		// The budget's hold is released first: ending the stream ends
		// its context, which would otherwise cut what is not yet sent.
		s.CloseWrite()
	}
	fail := func(me *meshError) {
		recordMeshError(o, me, grpc)
		p.m.meshErrors.WithLabelValues(inbound, me.reason).Inc()
		p.m.requests.WithLabelValues(inbound, class(me.status)).Inc()
		p.log.Info("request failed in the mesh", "service", svc, "source", in.Header.Source, "method", req.Method,
			"path", req.URL.Path, "reason", me.reason, "status", me.status, "detail", me.detail)
		answer(me.response(req, grpc))
	}
	if p.deps.Authorizer != nil {
		preq := policy.Request{Method: req.Method, Path: cleanPath(req.URL.Path), Header: headerOf(req.Header)}
		if ok, why := p.deps.Authorizer.AllowedRequest(in.Target.Source, svc, preq); !ok {
			fail(&meshError{http.StatusForbidden, ReasonDenied, why})
			return
		}
	}
	// A Fault acts on what the intentions let through, before the app.
	fp := p.planFor(svc, req)
	if me := fp.wait(ctx); me != nil {
		fail(me)
		return
	}
	if fp.abort {
		fp.recordAbort(o, grpc)
		p.m.meshErrors.WithLabelValues(inbound, ReasonFaultInjected).Inc()
		p.m.requests.WithLabelValues(inbound, class(fp.httpStatus)).Inc()
		p.log.Debug("request aborted by a fault policy", "service", svc, "source", in.Header.Source,
			"method", req.Method, "path", req.URL.Path, "status", fp.httpStatus, "grpc_status", fp.grpcStatus)
		answer(fp.abortResponse(req, grpc))
		return
	}
	var remaining time.Duration
	if has {
		dl, _ := ctx.Deadline()
		remaining = time.Until(dl)
		if remaining <= 0 {
			fail(timeoutError(true, "the caller's deadline passed before the request reached the app"))
			return
		}
	}
	deliverBudget(req.Header, remaining, has, grpc)
	if req.Method == http.MethodConnect || isUpgrade(req.Header) {
		p.serveUpgradeIn(ctx, s, br, req, in, o, fail)
		return
	}
	removeHopHeaders(req.Header)
	keepUserAgent(req.Header)
	req.URL.Scheme = "http"
	req.URL.Host = in.Target.Addr.String()
	req.RequestURI = ""
	req.Close = false
	t0 := time.Now()
	var resp *http.Response
	if proto == policy.ProtocolHTTP2 || proto == policy.ProtocolGRPC {
		resp, err = p.h2.RoundTrip(req.WithContext(ctx))
	} else {
		resp, err = p.h1.roundTrip(ctx, req, req.URL.Host, p.bufferBody(req))
	}
	if err != nil {
		fail(appError(ctx, err, true))
		return
	}
	p.m.duration.WithLabelValues(inbound).Observe(time.Since(t0).Seconds())
	p.m.requests.WithLabelValues(inbound, class(resp.StatusCode)).Inc()
	o.Status = resp.StatusCode
	if fp.delay > 0 {
		resp.Header[FaultHeader] = fp.marks()
	}
	stop = context.AfterFunc(ctx, func() { s.Abort(tunnel.AbortFailed) })
	answer(resp)
	resp.Body.Close()
	if grpc {
		o.GRPCStatus = grpcStatusOf(resp)
	}
}

// bufferBody reads a short request body of known length whole, so that
// the request can be sent again on a fresh connection when the pooled one
// it was sent on turns out closed by the app; it reports whether the
// request can be sent again.
func (p *Proxy) bufferBody(req *http.Request) bool {
	switch {
	case req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0:
		return true
	case req.ContentLength > 0 && req.ContentLength <= int64(p.cfg.MaxReplayBody):
		b := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, b); err != nil {
			return false // the caller's stream failed: so will the request
		}
		// The body's end (a body of known length reports it without
		// reading the stream), so that the stream's reader is known to be
		// free once the answer is sent.
		var one [1]byte
		req.Body.Read(one[:])
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		return true
	}
	return false
}

// writeResponse writes resp in HTTP/1.1 form: chunked when its length is
// unknown, so that trailers (gRPC's status) follow the body, and then each
// piece leaves as soon as the app sent it.
func (p *Proxy) writeResponse(bw *bufio.Writer, resp *http.Response) (int64, error) {
	removeHopHeaders(resp.Header)
	resp.ProtoMajor, resp.ProtoMinor, resp.Proto = 1, 1, "HTTP/1.1"
	if (resp.ContentLength < 0 || len(resp.Trailer) > 0) && bodyAllowed(resp.StatusCode) {
		// A body of known length with trailers announced (an HTTP/2 app
		// may send both) is sent chunked too: HTTP/1.1 has trailers
		// after chunks only.
		resp.ContentLength = -1
		resp.TransferEncoding = []string{"chunked"}
		if resp.Trailer == nil {
			// Trailers the app did not announce are filled in here as the
			// body ends, and written after it.
			resp.Trailer = http.Header{}
		}
	} else {
		resp.TransferEncoding = nil
	}
	return p.writeWithBody(bw, resp)
}

// writeWithBody writes resp through bw, its body flushed as it comes when
// its length is unknown, and returns the body's bytes written.
func (p *Proxy) writeWithBody(bw *bufio.Writer, resp *http.Response) (int64, error) {
	body := resp.Body
	resp.Body = p.interactive(body, resp.ContentLength, bw)
	sw := &streamWriter{bw: bw, p: p}
	err := resp.Write(sw)
	n := sw.n
	if fr, ok := resp.Body.(*flushingReader); ok {
		n += fr.n
	}
	resp.Body = body
	if err == nil {
		err = bw.Flush()
	}
	return n, err
}

// bodyAllowed reports whether a response of status may have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// cleanPath is the path intentions decide on: the decoded path with dot
// segments and repeated slashes resolved (a trailing slash kept), so that
// "/a/../admin" and "//admin" meet a rule on "/admin" as the app will
// likely read them.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean(p)
	if c == "." {
		c = "/"
	}
	if c[0] != '/' {
		c = "/" + c
	}
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}
