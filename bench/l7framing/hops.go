package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meshwork/meshwork/transport"
	"github.com/meshwork/meshwork/transport/transporttest"
	"github.com/meshwork/meshwork/transport/udpgro"
	"github.com/meshwork/meshwork/transport/wire"
)

// The paths measured, in the order they are run and reported.
const (
	pathDirect = "direct"
	pathHTTP3  = "http3"
	pathStream = "stream"
	// pathStreamWait is pathStream under today's OpenStream contract: the
	// caller sends nothing after the header until the status arrives, one
	// more round trip per request.
	pathStreamWait = "stream-wait"
)

const (
	trustDomain = "bench.meshwork.test"
	appService  = "app"
	// bodySize is the size of every request body and of every answer.
	bodySize = 1024
	// budget is the deadline the caller hop gives each request; what is
	// left of it travels to the far hop (the wire header's timeout, or a
	// header on HTTP/3) and reaches the app as deadlineHeader.
	budget = 5 * time.Second
	// deadlineHeader carries the remaining budget, in milliseconds, to the
	// app (issue 25's x-meshwork-deadline-ms).
	deadlineHeader = "X-Meshwork-Deadline-Ms"
	// seenDeadlineHeader is the app's echo of deadlineHeader, so that the
	// test can check that the budget arrived.
	seenDeadlineHeader = "X-Seen-Deadline-Ms"
	// idHeader is echoed by the app, to check headers pass both ways.
	idHeader = "X-Bench-Id"
	echoPath = "/echo"
	slowPath = "/slow"
	// trailerPath answers with a chunked body and a grpc-status trailer,
	// as gRPC needs.
	trailerPath = "/trailer"
	blockPath   = "/block"
	slowDelay   = 200 * time.Millisecond
	h3Abort     = quic.StreamErrorCode(0x10c) // H3_REQUEST_CANCELLED
	streamFail  = quic.StreamErrorCode(2)     // tunnel.AbortFailed
)

// bufPool holds the copy buffers of every hop and of the app.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

// app is the service at the end of every path: it answers a POST with its
// own body (1 KiB in, 1 KiB out), echoes idHeader and the deadline it was
// given, sleeps slowDelay on slowPath, ends with a trailer on trailerPath,
// and on blockPath waits for release
// (closed by the test) after telling blocked that it arrived.
type app struct {
	blocked chan struct{}
	release chan struct{}
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case slowPath:
		t := time.NewTimer(slowDelay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	case blockPath:
		a.blocked <- struct{}{}
		select {
		case <-a.release:
		case <-r.Context().Done():
			return
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := io.ReadFull(r.Body, (*bp)[:bodySize+1])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if n > bodySize {
		http.Error(w, "body over 1 KiB", http.StatusRequestEntityTooLarge)
		return
	}
	h := w.Header()
	if v := r.Header.Get(idHeader); v != "" {
		h.Set(idHeader, v)
	}
	if v := r.Header.Get(deadlineHeader); v != "" {
		h.Set(seenDeadlineHeader, v)
	}
	if r.URL.Path == trailerPath {
		h.Set("Trailer", "Grpc-Status")
		w.Write((*bp)[:n])
		h.Set("Grpc-Status", "0")
		return
	}
	h.Set("Content-Length", strconv.Itoa(n))
	w.Write((*bp)[:n])
}

// env is one run's set of paths, all ending at the same app.
type env struct {
	app     *app
	paths   []*path
	closers []func()
}

// path is one way from the client to the app: the URL the client sends to.
type path struct {
	name string
	url  string
}

// newEnv starts the app, the HTTP/3 hop pair and the stream hop pair, each
// pair joined by its own QUIC connection with mutual TLS, all on loopback.
func newEnv(ctx context.Context) (*env, error) {
	e := &env{app: &app{blocked: make(chan struct{}, 1), release: make(chan struct{})}}
	appAddr, err := e.serveHTTP(e.app)
	if err != nil {
		return nil, err
	}
	e.paths = append(e.paths, &path{name: pathDirect, url: "http://" + appAddr})

	ca, err := transporttest.NewCA(trustDomain)
	if err != nil {
		return nil, err
	}
	cfg := transport.Config{Node: "bench", TrustDomain: trustDomain}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fwd := newAppForwarder(appAddr)
	e.closers = append(e.closers, fwd.rt.CloseIdleConnections)

	for _, name := range []string{pathHTTP3, pathStream, pathStreamWait} {
		callerConn, farLn, err := e.quicPair(ctx, ca, cfg, name)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		var caller http.Handler
		switch name {
		case pathHTTP3:
			srv := &http3.Server{Handler: &h3Far{fwd: fwd}}
			farConn, err := farLn.Accept(ctx)
			if err != nil {
				e.close()
				return nil, fmt.Errorf("%s: accept: %w", name, err)
			}
			go srv.ServeQUICConn(farConn)
			e.closers = append(e.closers, func() { srv.Close() })
			tr := &http3.Transport{DisableCompression: true}
			caller = &h3Caller{cc: tr.NewClientConn(callerConn)}
		case pathStream, pathStreamWait:
			wait := name == pathStreamWait
			far := &streamFar{fwd: fwd, flushStatus: wait}
			go far.serve(ctx, farLn)
			caller = &streamCaller{conn: callerConn, source: ca.ServiceID("client"), port: 8080, waitStatus: wait}
		}
		addr, err := e.serveHTTP(caller)
		if err != nil {
			e.close()
			return nil, err
		}
		e.paths = append(e.paths, &path{name: name, url: "http://" + addr})
	}
	return e, nil
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// serveHTTP serves h with net/http on a loopback port.
func (e *env) serveHTTP(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	e.closers = append(e.closers, func() { srv.Close() })
	return ln.Addr().String(), nil
}

// quicPair makes the one QUIC connection between the two hops of a path:
// node "caller" dials node "far", each proving its node identity with a
// leaf of the same CA, as agents do. It returns the caller's end and the
// far listener, on which the connection waits to be accepted.
func (e *env) quicPair(ctx context.Context, ca *transporttest.CA, cfg transport.Config, name string) (*quic.Conn, *quic.Listener, error) {
	alpn := transport.ALPN
	qc := cfg.QUIC()
	if name == pathHTTP3 {
		alpn = http3.NextProtoH3
		// HTTP/3 needs unidirectional streams (control and QPACK); the
		// tunnel allows none.
		qc.MaxIncomingUniStreams = 8
	}
	farTLS, err := hopTLS(ca, "far", "caller", alpn, true)
	if err != nil {
		return nil, nil, err
	}
	callerTLS, err := hopTLS(ca, "caller", "far", alpn, false)
	if err != nil {
		return nil, nil, err
	}
	farTr, err := quicTransport(cfg)
	if err != nil {
		return nil, nil, err
	}
	e.closers = append(e.closers, func() { farTr.Close() })
	ln, err := farTr.Listen(farTLS, qc)
	if err != nil {
		return nil, nil, err
	}
	callerTr, err := quicTransport(cfg)
	if err != nil {
		return nil, nil, err
	}
	e.closers = append(e.closers, func() { callerTr.Close() })
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := callerTr.Dial(dctx, ln.Addr(), callerTLS, qc)
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	e.closers = append(e.closers, func() { conn.CloseWithError(0, "") })
	return conn, ln, nil
}

// quicTransport is a quic-go transport on a loopback UDP socket with the
// tunnel's buffers and receive offload.
func quicTransport(cfg transport.Config) (*quic.Transport, error) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	pc.SetReadBuffer(cfg.SocketBuffer)
	pc.SetWriteBuffer(cfg.SocketBuffer)
	conn, _ := udpgro.Wrap(pc)
	return &quic.Transport{Conn: conn}, nil
}

// hopTLS is the mutual TLS of one hop: its node leaf, and a check that the
// peer's chain leads to the CA and names the peer node.
func hopTLS(ca *transporttest.CA, node, peer, alpn string, server bool) (*tls.Config, error) {
	leaf, err := ca.IssueNode(node, nil, time.Hour)
	if err != nil {
		return nil, err
	}
	id := transporttest.NewIdentity(trustDomain, leaf, ca)
	want := ca.NodeID(peer)
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		ids, err := id.VerifyPeer(raw)
		if err != nil {
			return err
		}
		for _, got := range ids {
			if got == want {
				return nil
			}
		}
		return fmt.Errorf("peer is %v, want %s", ids, want)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{alpn}, VerifyPeerCertificate: verify}
	if server {
		c.GetCertificate = id.GetCertificate
		c.ClientAuth = tls.RequireAnyClientCert
	} else {
		c.GetClientCertificate = id.GetClientCertificate
		c.InsecureSkipVerify = true // verified by VerifyPeerCertificate
	}
	return c, nil
}

// appForwarder is the far hop's side of every path: a keep-alive HTTP/1.1
// pool to the app, shared by both framings so that only the framing
// between the hops differs.
type appForwarder struct {
	addr string
	rt   *http.Transport
}

func newAppForwarder(addr string) *appForwarder {
	return &appForwarder{addr: addr, rt: &http.Transport{
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// roundTrip sends req, as the far hop received it, to the app.
func (f *appForwarder) roundTrip(req *http.Request) (*http.Response, error) {
	req.URL.Scheme = "http"
	req.URL.Host = f.addr
	req.RequestURI = ""
	removeHopHeaders(req.Header)
	return f.rt.RoundTrip(req)
}

// hopHeaders are the HTTP/1.1 connection-specific headers (RFC 9110
// 7.6.1), never forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, k := range hopHeaders {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
}

// copyResponse writes resp to w, then its trailers, and closes its body.
func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	// Announce the trailers known now: HTTP/3 sends them as a "trailer"
	// field, and an HTTP/1.1 answer must then be chunked, whatever length
	// the far side counted.
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	if len(h["Trailer"]) > 0 {
		h.Del("Content-Length")
	}
	w.WriteHeader(resp.StatusCode)
	bp := bufPool.Get().(*[]byte)
	io.CopyBuffer(w, resp.Body, *bp)
	bufPool.Put(bp)
	// Known once the body is read to its end.
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
}

// remaining is what is left of ctx's deadline.
func remaining(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return time.Until(d)
}

// --- (b) HTTP/3 between the hops ---

// h3Caller is the calling hop of the HTTP/3 path: each HTTP/1.1 request
// from the app becomes one HTTP/3 request on the shared connection. The
// deadline rides as a header: HTTP/3 has no place of its own for it.
type h3Caller struct {
	cc *http3.ClientConn
}

func (h *h3Caller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	defer cancel()
	out := r.WithContext(ctx)
	out.URL.Scheme = "https"
	out.URL.Host = appService
	out.RequestURI = ""
	removeHopHeaders(out.Header)
	out.Header.Set(deadlineHeader, strconv.FormatInt(remaining(ctx).Milliseconds(), 10))
	resp, err := h.cc.RoundTrip(out)
	if err != nil {
		http.Error(w, "http3: "+err.Error(), http.StatusBadGateway)
		return
	}
	copyResponse(w, resp)
}

// h3Far is the far hop of the HTTP/3 path: an http3.Server handler that
// forwards to the app.
type h3Far struct {
	fwd *appForwarder
}

func (h *h3Far) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if ms, err := strconv.ParseInt(r.Header.Get(deadlineHeader), 10, 64); err == nil && ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
		r = r.WithContext(ctx)
	}
	resp, err := h.fwd.roundTrip(r)
	if err != nil {
		http.Error(w, "app: "+err.Error(), http.StatusBadGateway)
		return
	}
	copyResponse(w, resp)
}

// --- (c) one QUIC stream per request ---

// streamCaller is the calling hop of the stream path: each request gets a
// fresh stream carrying the tunnel's wire header (whose timeout is the
// remaining budget), then the request in HTTP/1.1 form. Unless
// waitStatus is set, it does not wait for the status frame before it sends
// the request, as today's per-connection streams do: the far hop sends the
// status, then the response.
type streamCaller struct {
	conn       *quic.Conn
	source     string
	port       uint16
	waitStatus bool
}

func (h *streamCaller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	defer cancel()
	resp, err := h.roundTrip(ctx, r)
	if err != nil {
		http.Error(w, "stream: "+err.Error(), http.StatusBadGateway)
		return
	}
	copyResponse(w, resp)
}

func (h *streamCaller) roundTrip(ctx context.Context, r *http.Request) (*http.Response, error) {
	s, err := h.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	deadline, _ := ctx.Deadline()
	s.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { s.CancelRead(streamFail); s.CancelWrite(streamFail) })
	defer stop()

	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(s)
	defer func() { bw.Reset(nil); writerPool.Put(bw) }()
	hdr := wire.Header{Service: appService, Port: h.port, Source: h.source, Timeout: time.Until(deadline)}
	bp := bufPool.Get().(*[]byte)
	b, err := wire.AppendHeader((*bp)[:0], &hdr)
	if err == nil {
		_, err = bw.Write(b)
	}
	bufPool.Put(bp)
	if err != nil {
		s.CancelWrite(streamFail)
		return nil, fmt.Errorf("write header: %w", err)
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(s)
	putReader := func() { br.Reset(nil); readerPool.Put(br) }
	if h.waitStatus {
		if err := bw.Flush(); err != nil {
			putReader()
			return nil, fmt.Errorf("write header: %w", err)
		}
		if err := readAccepted(br); err != nil {
			putReader()
			s.CancelWrite(streamFail)
			return nil, err
		}
	}
	removeHopHeaders(r.Header)
	if err := r.Write(bw); err != nil {
		putReader()
		s.CancelWrite(streamFail)
		return nil, fmt.Errorf("write request: %w", err)
	}
	if err := bw.Flush(); err != nil {
		putReader()
		return nil, fmt.Errorf("write request: %w", err)
	}
	s.Close() // the request is whole: FIN

	if !h.waitStatus {
		if err := readAccepted(br); err != nil {
			putReader()
			s.CancelRead(streamFail)
			return nil, err
		}
	}
	resp, err := http.ReadResponse(br, r)
	if err != nil {
		putReader()
		s.CancelRead(streamFail)
		return nil, fmt.Errorf("read response: %w", err)
	}
	resp.Body = &streamBody{ReadCloser: resp.Body, s: s, br: br}
	return resp, nil
}

// readAccepted reads the far hop's status frame and fails unless it
// accepted the stream.
func readAccepted(br *bufio.Reader) error {
	st, err := wire.ReadStatus(br)
	if err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	if !st.Accepted() {
		return fmt.Errorf("refused: %s: %s", st.Code, st.Reason)
	}
	return nil
}

// streamBody is a response body read from a stream: closing it returns
// the reader to its pool and stops the stream if the body was left unread.
type streamBody struct {
	io.ReadCloser
	s  *quic.Stream
	br *bufio.Reader
}

func (b *streamBody) Close() error {
	err := b.ReadCloser.Close()
	b.s.CancelRead(0) // a no-op once the FIN was read
	b.br.Reset(nil)
	readerPool.Put(b.br)
	return err
}

// streamFar is the far hop of the stream path: it reads the wire header
// and the request from each stream, and proxies the request to the app.
// A prototype: it runs no Admit (identity, policy) on the header. With
// flushStatus it sends the status before it reads the request, for a
// caller that waits for it.
type streamFar struct {
	fwd         *appForwarder
	flushStatus bool
}

func (f *streamFar) serve(ctx context.Context, ln *quic.Listener) {
	conn, err := ln.Accept(ctx)
	if err != nil {
		return
	}
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		go f.serveStream(s)
	}
}

var acceptedStatus = wire.AppendStatus(nil, wire.Status{Code: wire.CodeAccepted})

func (f *streamFar) serveStream(s *quic.Stream) {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(s)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(s)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	s.SetReadDeadline(time.Now().Add(10 * time.Second)) // the tunnel's HeaderTimeout
	hb := bufPool.Get().(*[]byte)
	hdr, err := wire.ReadHeader(br, *hb)
	bufPool.Put(hb)
	if err != nil {
		bw.Write(wire.AppendStatus(nil, wire.Status{Code: wire.CodeBadHeader, Reason: err.Error()}))
		bw.Flush()
		s.Close()
		s.CancelRead(streamFail)
		return
	}
	ctx := context.Background()
	if hdr.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, hdr.Timeout)
		defer cancel()
		s.SetDeadline(time.Now().Add(hdr.Timeout))
	}
	bw.Write(acceptedStatus)
	if f.flushStatus {
		if err := bw.Flush(); err != nil {
			s.CancelRead(streamFail)
			return
		}
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		s.CancelRead(streamFail)
		s.CancelWrite(streamFail)
		return
	}
	req = req.WithContext(ctx)
	if hdr.Timeout > 0 {
		req.Header.Set(deadlineHeader, strconv.FormatInt(remaining(ctx).Milliseconds(), 10))
	}
	resp, err := f.fwd.roundTrip(req)
	if err != nil {
		resp = &http.Response{
			StatusCode: http.StatusBadGateway, ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Body: http.NoBody, Request: req,
		}
	}
	removeHopHeaders(resp.Header)
	err = resp.Write(bw)
	resp.Body.Close()
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.CancelWrite(streamFail)
		return
	}
	s.Close()
}
