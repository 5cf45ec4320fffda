package l7

import (
	"bufio"
	"context"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/meshwork/meshwork/policy"
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
	// The budget runs from when the header was read.
	has := in.Header.Timeout > 0
	if has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, in.Start.Add(in.Header.Timeout))
		defer cancel()
	}
	stop := context.AfterFunc(ctx, func() { s.Abort(tunnel.AbortFailed) })
	defer stop()

	hl := limitHead(s, p.cfg.MaxHeaderBytes)
	br := p.getReader(hl)
	defer p.putReader(br)
	s.SetReadDeadline(time.Now().Add(p.cfg.HeaderTimeout))
	req, err := http.ReadRequest(br)
	s.SetReadDeadline(time.Time{})
	if err != nil {
		p.log.Info("request unreadable; stream aborted", "service", svc, "source", in.Header.Source, "err", err)
		p.m.meshErrors.WithLabelValues(inbound, ReasonBadRequest).Inc()
		s.Abort(tunnel.AbortFailed)
		return
	}
	hl.n = -1
	proto := p.deps.Protocol(svc)
	grpc := proto == policy.ProtocolGRPC || isGRPC(req.Header)
	answer := func(resp *http.Response) {
		bw := p.getWriter(s)
		err := p.writeResponse(bw, resp)
		p.putWriter(bw)
		if err != nil {
			s.Abort(tunnel.AbortFailed)
			return
		}
		s.CloseWrite()
	}
	fail := func(me *meshError) {
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
		p.serveUpgradeIn(ctx, s, br, req, in, stop, fail)
		return
	}
	removeHopHeaders(req.Header)
	keepUserAgent(req.Header)
	req.URL.Scheme = "http"
	req.URL.Host = in.Target.Addr.String()
	req.RequestURI = ""
	req.Close = false
	rt := p.h1
	if proto == policy.ProtocolHTTP2 || proto == policy.ProtocolGRPC {
		rt = p.h2
	}
	t0 := time.Now()
	resp, err := rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		fail(appError(ctx, err, true))
		return
	}
	p.m.duration.WithLabelValues(inbound).Observe(time.Since(t0).Seconds())
	p.m.requests.WithLabelValues(inbound, class(resp.StatusCode)).Inc()
	answer(resp)
	resp.Body.Close()
}

// writeResponse writes resp in HTTP/1.1 form: chunked when its length is
// unknown, so that trailers (gRPC's status) follow the body; each piece
// of a streamed body leaves as soon as the app sent it.
func (p *Proxy) writeResponse(bw *bufio.Writer, resp *http.Response) error {
	removeHopHeaders(resp.Header)
	resp.ProtoMajor, resp.ProtoMinor, resp.Proto = 1, 1, "HTTP/1.1"
	resp.Close = false
	if resp.ContentLength < 0 && bodyAllowed(resp.StatusCode) {
		resp.TransferEncoding = []string{"chunked"}
		if resp.Trailer == nil {
			// Trailers the app did not announce are filled in here as the
			// body ends, and written after it.
			resp.Trailer = http.Header{}
		}
	} else {
		resp.TransferEncoding = nil
	}
	body := resp.Body
	resp.Body = &flushingReader{r: body, w: bw, p: p}
	err := resp.Write(&streamWriter{bw: bw, p: p})
	resp.Body = body
	if err == nil {
		err = bw.Flush()
	}
	return err
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
