package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/breaker"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/spans"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// serveApp is the HTTP server's handler: one request of an application.
func (p *Proxy) serveApp(w http.ResponseWriter, r *http.Request) {
	ac, _ := r.Context().Value(appConnKey{}).(*appConn)
	if ac == nil {
		http.Error(w, "meshwork: no route", http.StatusInternalServerError)
		return
	}
	p.m.active.WithLabelValues(outbound).Inc()
	defer p.m.active.WithLabelValues(outbound).Dec()
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r, ac.router)
		return
	}
	p.forward(w, r, ac.router)
}

// call is one request of an application on its way out.
type call struct {
	p      *Proxy
	r      *http.Request
	rt     Router
	grpc   bool
	ctx    context.Context // carries the request's budget
	caller bool            // the budget came from the caller's headers
	body   []byte          // the whole body, when kept for a retry
	// streamed is the body when it is streamed, not kept.
	streamed *eofBody
	replay   bool // body (or no body) may be sent again
	hedging  bool // tries may run at once (retry.go)
	// verbatim leaves the answer unread but for its status code: an
	// HTTP/1.1 application gets the bytes as the receiving agent wrote
	// them (copyVerbatim).
	verbatim bool
	trace    wire.TraceContext
	idle     time.Duration      // ends an answer that stalls this long
	res      *policy.Resilience // the destination's, read once by budget
	admitted *breaker.Breaker   // holds a max_requests slot, given back by end

	// Of the answer being relayed, set by accept (retry.go).
	br        *bufio.Reader // reads the answer from the stream
	stream    *tunnel.Stream
	failed    bool       // counts as a failure for the balancer
	bodyBusy  bool       // a writer may still be reading the request body
	finish    func()     // ends an upgrade's try
	won       *tryResult // the try whose answer is relayed
	single    tryResult  // the result of an unhedged try
	tryCancel context.CancelFunc
	cancel    context.CancelFunc

	// obs is the request's record, handed to the observer by begin and
	// end; it lives in the call so that recording allocates nothing.
	obs      observe.Call
	recorded bool // end handed obs over
}

// begin starts the request's record and its client span: the span joins
// the application's trace (its traceparent) or starts one, and its ID
// travels in the stream's header as the parent of the receiving side's.
func (c *call) begin() {
	r, o := c.r, &c.obs
	o.Direction, o.Protocol, o.Start, o.GRPCStatus = observe.Outbound, protocolOf(c.grpc), time.Now(), -1
	c.rt.Describe(o)
	describeRequest(o, r)
	var app wire.TraceContext
	if tp := r.Header["Traceparent"]; len(tp) > 0 {
		app, _ = wire.ParseTraceparent(tp[0])
	}
	o.Trace, c.trace = spans.Client(app, c.p.cfg.TraceSampleRate)
	c.p.beginRecord(o)
}

// forward carries one request of an HTTP/2 application: through the
// mesh, then its answer relayed through w.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rt Router) {
	c := &call{p: p, r: r, rt: rt, grpc: isGRPC(r.Header)}
	c.begin()
	defer c.end()
	resp, me := c.send()
	if me != nil {
		c.fail(me)
		if r.Context().Err() == nil {
			me.write(w, c.grpc)
		}
		return
	}
	n, err := p.relay(w, resp, c.br, c.ctx)
	c.obs.BytesOut = n
	c.obs.GRPCStatus = grpcStatusOf(resp)
	if err != nil {
		c.failed = true
		c.abort()
		if c.obs.MeshError == "" && r.Context().Err() == nil {
			c.obs.MeshError = ReasonUpstreamReset
		}
	}
}

// budget works out the request's deadline: the smallest of the
// destination's request timeout and the caller's x-meshwork-deadline-ms or
// grpc-timeout. A request whose deadline has passed fails at once.
func (c *call) budget() (context.Context, context.CancelFunc, *meshError) {
	ctx := c.r.Context()
	res := c.p.deps.Resilience(c.rt.Destination())
	c.res = res
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
	default:
		c.streamed = &eofBody{ReadCloser: r.Body}
		r.Body = c.streamed
	}
	return nil
}

// eofBody is a streamed request body that records reaching its end.
type eofBody struct {
	io.ReadCloser
	eof atomic.Bool
	n   atomic.Int64 // bytes read
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

// lastWrite bounds the wait for a writer that has read the whole body
// and is sending its end.
const lastWrite = time.Second

// tryResult is the outcome of one try: an answer whose head was read,
// or a failure before any answer.
type tryResult struct {
	resp       *http.Response
	att        *Attempt
	br         *bufio.Reader // reads the answer from the stream
	stream     *tunnel.Stream
	meshReason string // the answer's x-meshwork-error
	verbatim   bool   // only resp's status was read (call.verbatim)
	// finish ends the try: the upload, the reader, att.Done, with failed
	// counted for the balancer.
	finish func(failed bool)

	me            *meshError // no answer
	failed        condition  // of a failure before any answer
	perTryExpired bool       // the failure is per_try_timeout's
	hedge         bool       // the try is a hedge
	cancel        context.CancelFunc
}

// try sends the request to one instance, avoiding those in avoid where
// it can, and returns its answer or why there is none. onOpen, when set,
// learns of the instance chosen as soon as the stream is open. The outcome
// is written into tr, which try returns.
func (c *call) try(ctx context.Context, preq policy.Request, avoid []string, onOpen func(*Attempt), tr *tryResult) *tryResult {
	p := c.p
	att, err := c.rt.Open(ctx, preq, c.trace, avoid)
	if err != nil {
		// The Router's connect already tried other instances, from the
		// same retry budget.
		tr.me = openError(ctx, err, c.caller)
		return tr
	}
	if onOpen != nil {
		onOpen(att)
	}
	s := att.Stream
	stop := context.AfterFunc(ctx, func() { s.Abort(tunnel.AbortFailed) })
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
	hl.idle, hl.deadline = c.idle, s.SetReadDeadline
	br := p.getReader(hl)
	fail := func(me *meshError, failed condition) *tryResult {
		stop()
		c.noteUpload(written)
		p.putReader(br)
		// A hedge's loser, cut because the other try answered, took at
		// least this long but did not fail.
		att.Done(time.Since(t0), !hedgeLost(ctx))
		tr.me, tr.failed, tr.att = me, failed, att
		return tr
	}
	if err := s.Status(br); err != nil {
		// Status cancelled and released the stream, which ends a write in
		// progress.
		var re *tunnel.RefusedError
		var failed condition
		if errors.As(err, &re) && re.Code.Retryable() {
			failed = condRefusedStream
		} else if !expired(ctx) {
			failed = condReset
		}
		return fail(openError(ctx, err, c.caller), failed)
	}
	var resp *http.Response
	var reason string
	if c.verbatim {
		var code int
		if code, err = statusCode(br); err == nil {
			resp = &http.Response{StatusCode: code, Body: http.NoBody, Request: c.r}
			if code >= 400 {
				reason = meshErrorIn(br)
			}
		}
	} else {
		resp, err = http.ReadResponse(br, c.r)
		if err == nil {
			if v := resp.Header[ErrorHeader]; len(v) > 0 {
				reason = knownReason([]byte(v[0]))
			}
		}
	}
	if err != nil {
		s.Abort(tunnel.AbortFailed)
		if expired(ctx) {
			return fail(timeoutError(c.caller, "no answer in time"), 0)
		}
		return fail(&meshError{http.StatusBadGateway, ReasonUpstreamReset, "read the answer: " + err.Error()}, condReset)
	}
	hl.n = -1 // the head is read: the body is not bounded
	latency := time.Since(t0)
	p.m.duration.WithLabelValues(outbound).Observe(latency.Seconds())
	p.m.requests.WithLabelValues(outbound, class(resp.StatusCode)).Inc()
	tr.resp, tr.att, tr.br, tr.stream, tr.meshReason, tr.verbatim = resp, att, br, s, reason, c.verbatim
	tr.finish = func(failed bool) {
		stop()
		if !c.noteUpload(written) {
			// The answer is whole but the request is still being sent
			// (the app answered early): end the upload rather than leave
			// it hanging.
			s.Abort(tunnel.AbortFailed)
		}
		resp.Body.Close()
		p.putReader(br)
		att.Done(latency, failed)
	}
	return tr
}

// uploaded reports whether nothing reads the request body any more: it
// was sent whole, or the mesh answered without sending it.
func (c *call) uploaded() bool { return !c.bodyBusy }

// noteUpload records whether the writer of a try is done with the body,
// and returns it.
func (c *call) noteUpload(written <-chan error) bool {
	select {
	case <-written:
		return true
	default:
	}
	if c.streamed != nil && c.streamed.eof.Load() {
		// The body was read whole: the writer is sending its end.
		t := time.NewTimer(lastWrite)
		defer t.Stop()
		select {
		case <-written:
			return true
		case <-t.C:
		}
	}
	c.bodyBusy = true
	return false
}

// abort cuts the stream of the answer being relayed.
func (c *call) abort() {
	if c.stream != nil {
		c.stream.Abort(tunnel.AbortFailed)
	}
}

// end releases what send holds (the stream of the answer, the timers)
// and, the first time, ends the request's record.
func (c *call) end() {
	if c.won != nil {
		c.won.finish(c.failed)
		c.won = nil
	}
	if c.finish != nil {
		c.finish()
		c.finish = nil
	}
	if c.tryCancel != nil {
		c.tryCancel()
		c.tryCancel = nil
	}
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	if c.admitted != nil {
		c.admitted.Release(breaker.Requests)
		c.admitted = nil
	}
	if !c.recorded {
		c.recorded = true
		if c.obs.Attempts > 0 {
			c.p.m.attempts.Observe(float64(c.obs.Attempts))
		}
		if c.obs.BytesIn == 0 {
			c.obs.BytesIn = c.bodySent()
		}
		c.p.endRecord(&c.obs)
	}
}

// bodySent is how much of the request's body was taken from the
// application to be sent.
func (c *call) bodySent() int64 {
	switch {
	case c.streamed != nil:
		return c.streamed.n.Load()
	case c.obs.Attempts > 0:
		return int64(len(c.body))
	}
	return 0
}

// writeRequest writes the request on the stream and ends the stream's
// sending side. A streamed body is flushed as it comes.
func (c *call) writeRequest(s *tunnel.Stream) error {
	bw := c.p.getWriter(s)
	defer c.p.putWriter(bw)
	r := c.r
	if c.hedging {
		// Hedged tries write at once: each writes a copy of its own.
		rc := *r
		r = &rc
	}
	body := r.Body
	if c.body != nil {
		r.Body = io.NopCloser(bytes.NewReader(c.body))
	} else if !c.replay {
		r.Body = c.p.interactive(body, r.ContentLength, bw)
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

// fail records, counts and logs a request the mesh answers itself.
func (c *call) fail(me *meshError) {
	recordMeshError(&c.obs, me, c.grpc)
	if c.r.Context().Err() != nil {
		return // the application left; nobody to answer
	}
	p := c.p
	p.m.meshErrors.WithLabelValues(outbound, me.reason).Inc()
	p.m.requests.WithLabelValues(outbound, class(me.status)).Inc()
	level := slog.LevelInfo
	if me.reason == ReasonCircuitOpen {
		// An open breaker refuses requests by the thousand; its metric
		// counts them.
		level = slog.LevelDebug
	}
	p.log.Log(context.Background(), level, "request failed in the mesh", "service", c.rt.Destination(), "method", c.r.Method,
		"path", c.r.URL.Path, "reason", me.reason, "status", me.status, "detail", me.detail)
}

// relay writes resp to the application: head, body as it comes (flushed
// whenever no more is buffered), then trailers. It returns the body's
// bytes written.
func (p *Proxy) relay(w http.ResponseWriter, resp *http.Response, br *bufio.Reader, ctx context.Context) (written int64, err error) {
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
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if br.Buffered() == 0 {
				if ferr := rc.Flush(); ferr != nil {
					return written, ferr
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return written, ctx.Err()
			}
			return written, err
		}
	}
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
	return written, nil
}

// headLimit bounds what a reader yields until lifted: the head of a
// request or response read through it cannot exceed the limit. With idle
// set, each read must make progress within idle.
type headLimit struct {
	r        io.Reader
	n        int // left; <0 means unbounded
	idle     time.Duration
	deadline func(time.Time)
}

// errHeadTooLarge is a head over the limit.
var errHeadTooLarge = errors.New("head too large")

func limitHead(r io.Reader, n int) *headLimit { return &headLimit{r: r, n: n} }

func (l *headLimit) Read(b []byte) (int, error) {
	if l.idle > 0 {
		l.deadline(time.Now().Add(l.idle))
	}
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

// statusCode reads the status code of the answer br holds, leaving the
// answer unread.
func statusCode(br *bufio.Reader) (int, error) {
	line, err := br.Peek(len("HTTP/1.1 200"))
	if err != nil {
		return 0, err
	}
	if string(line[:len("HTTP/1.1 ")]) != "HTTP/1.1 " {
		return 0, fmt.Errorf("answer starts with %q, not HTTP/1.1", line)
	}
	code, err := strconv.Atoi(string(line[len("HTTP/1.1 "):]))
	if err != nil || code < 100 || code > 999 {
		return 0, fmt.Errorf("answer's status line %q has no status code", line)
	}
	return code, nil
}
