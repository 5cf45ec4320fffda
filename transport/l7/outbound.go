package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// ServeConn serves an application's connection, HTTP/1.1 or h2c, until it
// closes; each request is routed through conn, which must be a Router.
func (p *Proxy) ServeConn(ctx context.Context, c *net.TCPConn, conn tunnel.Connector) {
	rt, ok := conn.(Router)
	if !ok {
		p.log.Error("connector cannot route requests; connection closed", "remote", c.RemoteAddr().String())
		c.Close()
		return
	}
	ac := &appConn{TCPConn: c, router: rt, done: make(chan struct{})}
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

// serveApp is the HTTP server's handler: one request of an application.
func (p *Proxy) serveApp(w http.ResponseWriter, r *http.Request) {
	ac, _ := r.Context().Value(appConnKey{}).(*appConn)
	if ac == nil {
		http.Error(w, "meshwork: no route", http.StatusInternalServerError)
		return
	}
	p.m.active.WithLabelValues(outbound).Inc()
	defer p.m.active.WithLabelValues(outbound).Dec()
	if r.Method == http.MethodConnect || isUpgrade(r.Header) {
		p.serveUpgrade(w, r, ac.router)
		return
	}
	p.forward(w, r, ac.router)
}

// call is one request of an application on its way out.
type call struct {
	p      *Proxy
	w      http.ResponseWriter
	r      *http.Request
	rt     Router
	grpc   bool
	ctx    context.Context // carries the request's budget
	caller bool            // the budget came from the caller's headers
	body   []byte          // the whole body, when kept for a retry
	replay bool            // body (or no body) may be sent again
	trace  wire.TraceContext
}

// forward carries one request to an instance of the destination and its
// response back, trying another instance after a refusal that came
// before any answer, when the body can be sent again.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rt Router) {
	c := &call{p: p, w: w, r: r, rt: rt, grpc: isGRPC(r.Header)}
	ctx, cancel, err := c.budget()
	if cancel != nil {
		defer cancel()
	}
	if err != nil {
		c.fail(err)
		return
	}
	c.ctx = ctx
	if err := c.prepare(); err != nil {
		c.fail(err)
		return
	}
	if !c.replay && r.ProtoMajor == 1 {
		// The answer may begin while the body still streams (an app that
		// answers as it reads); HTTP/2 always allows that.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	res := p.deps.Resilience(rt.Destination())
	var perTry time.Duration
	if res.Retries != nil {
		perTry = time.Duration(res.Retries.PerTryTimeout)
	}
	preq := policy.Request{Method: r.Method, Path: r.URL.Path, Header: headerOf(r.Header)}
	var avoid []string
	for try := 1; ; try++ {
		tctx, tcancel := ctx, context.CancelFunc(nil)
		if perTry > 0 {
			tctx, tcancel = context.WithTimeout(ctx, perTry)
		}
		retry, err := c.try(tctx, preq, &avoid)
		if tcancel != nil {
			tcancel()
		}
		if err == nil {
			return
		}
		if retry && try < p.cfg.Attempts && c.replay && ctx.Err() == nil {
			p.m.retries.Inc()
			continue
		}
		c.fail(err)
		return
	}
}

// budget works out the request's deadline: the smallest of the
// destination's request timeout and the caller's x-meshwork-deadline-ms or
// grpc-timeout. A request whose deadline has passed fails at once.
func (c *call) budget() (context.Context, context.CancelFunc, *meshError) {
	ctx := c.r.Context()
	res := c.p.deps.Resilience(c.rt.Destination())
	var d time.Duration
	if res.Timeouts != nil {
		d = time.Duration(res.Timeouts.Request)
	}
	if cd, ok := callerBudget(c.r.Header); ok && (d <= 0 || cd <= d) {
		if cd <= 0 {
			return ctx, nil, timeoutError(true, "the request's deadline had passed when it reached the mesh")
		}
		d, c.caller = cd, true
	}
	if d <= 0 {
		return ctx, nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, nil
}

// prepare readies the request to be written on streams: the connection's
// own fields out, the caller's deadline header out (the receiver sets its
// own), and a short body kept so that it can be sent again.
func (c *call) prepare() *meshError {
	r := c.r
	if tp := r.Header.Get("Traceparent"); tp != "" {
		if tc, err := wire.ParseTraceparent(tp); err == nil {
			c.trace = tc
		}
	}
	removeHopHeaders(r.Header)
	delete(r.Header, DeadlineHeader)
	keepUserAgent(r.Header)
	r.Close = false
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		c.replay = true
	case r.ContentLength > 0 && r.ContentLength <= int64(c.p.cfg.MaxReplayBody):
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return &meshError{http.StatusBadRequest, ReasonBadRequest, "read the request body: " + err.Error()}
		}
		c.body, c.replay = b, true
	}
	return nil
}

// errRetry marks a try refused before any answer, which another instance
// may take.
var errRetry = errors.New("refused before any answer")

// try sends the request to one instance and relays its answer. It returns
// retry when the instance's agent refused the stream before the request
// reached any app, so that another instance may take it.
func (c *call) try(ctx context.Context, preq policy.Request, avoid *[]string) (retry bool, err error) {
	p := c.p
	att, err := c.rt.Open(ctx, preq, c.trace, *avoid)
	if err != nil {
		return false, openError(ctx, err, c.caller)
	}
	s := att.Stream
	stop := context.AfterFunc(ctx, func() { s.Abort(tunnel.AbortFailed) })
	defer stop()
	t0 := time.Now()
	written := make(chan error, 1)
	if c.replay {
		written <- c.writeRequest(s)
	} else {
		// Streamed: the answer may start before the body ends (gRPC
		// streams, an app refusing an upload early).
		go func() { written <- c.writeRequest(s) }()
	}
	hl := limitHead(s, p.cfg.MaxHeaderBytes)
	br := p.getReader(hl)
	defer p.putReader(br)
	if err := s.Status(br); err != nil {
		// Status cancelled and released the stream, which ends a write in
		// progress.
		att.Done(time.Since(t0), true)
		var re *tunnel.RefusedError
		if errors.As(err, &re) && re.Code.Retryable() {
			*avoid = append(*avoid, att.Instance)
			return true, openError(ctx, err, c.caller)
		}
		return false, openError(ctx, err, c.caller)
	}
	resp, err := http.ReadResponse(br, c.r)
	if err != nil {
		s.Abort(tunnel.AbortFailed)
		att.Done(time.Since(t0), true)
		if ctx.Err() != nil {
			return false, timeoutError(c.caller, "no answer in time")
		}
		return false, &meshError{http.StatusBadGateway, ReasonUpstreamReset, "read the answer: " + err.Error()}
	}
	hl.n = -1 // the head is read: the body is not bounded
	latency := time.Since(t0)
	p.m.duration.WithLabelValues(outbound).Observe(latency.Seconds())
	failed := resp.StatusCode >= 500
	if p.relay(c.w, resp, br, ctx) != nil {
		failed = true
		s.Abort(tunnel.AbortFailed)
	}
	select {
	case <-written:
	default:
		// The answer is whole but the request is still being sent (the
		// app answered early): end the upload rather than leave it
		// hanging.
		s.Abort(tunnel.AbortFailed)
	}
	att.Done(latency, failed)
	p.m.requests.WithLabelValues(outbound, class(resp.StatusCode)).Inc()
	return false, nil
}

// writeRequest writes the request on the stream and ends the stream's
// sending side. A streamed body is flushed as it comes.
func (c *call) writeRequest(s *tunnel.Stream) error {
	bw := c.p.getWriter(s)
	defer c.p.putWriter(bw)
	r := c.r
	body := r.Body
	if c.body != nil {
		r.Body = io.NopCloser(bytes.NewReader(c.body))
	} else if !c.replay {
		r.Body = &flushingReader{r: body, w: bw, p: c.p}
	}
	err := r.Write(&streamWriter{bw: bw, p: c.p})
	r.Body = body
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.Abort(tunnel.AbortFailed)
		return err
	}
	return s.CloseWrite()
}

// fail answers the application with the mesh's error.
func (c *call) fail(err error) {
	var me *meshError
	if !errors.As(err, &me) {
		me = &meshError{http.StatusBadGateway, ReasonUpstreamReset, err.Error()}
	}
	if c.r.Context().Err() != nil {
		return // the application left; nobody to answer
	}
	p := c.p
	p.m.meshErrors.WithLabelValues(outbound, me.reason).Inc()
	p.m.requests.WithLabelValues(outbound, class(me.status)).Inc()
	p.log.Info("request failed in the mesh", "service", c.rt.Destination(), "method", c.r.Method,
		"path", c.r.URL.Path, "reason", me.reason, "status", me.status, "detail", me.detail)
	me.write(c.w, c.grpc)
}

// relay writes resp to the application: head, body as it comes (flushed
// whenever no more is buffered), then trailers.
func (p *Proxy) relay(w http.ResponseWriter, resp *http.Response, br *bufio.Reader, ctx context.Context) error {
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	if resp.ContentLength >= 0 && len(resp.Trailer) == 0 {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	} else {
		delete(h, "Content-Length")
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if br.Buffered() == 0 {
				if ferr := rc.Flush(); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
	return nil
}

// headLimit bounds what a reader yields until lifted: the head of a
// request or response read through it cannot exceed the limit.
type headLimit struct {
	r io.Reader
	n int // left; <0 means unbounded
}

// errHeadTooLarge is a head over the limit.
var errHeadTooLarge = errors.New("head too large")

func limitHead(r io.Reader, n int) *headLimit { return &headLimit{r: r, n: n} }

func (l *headLimit) Read(b []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(b)
	}
	if l.n == 0 {
		return 0, errHeadTooLarge
	}
	if len(b) > l.n {
		b = b[:l.n]
	}
	n, err := l.r.Read(b)
	l.n -= n
	return n, err
}
