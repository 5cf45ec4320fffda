package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/transport/rawio"
)

// h1Pool holds keep-alive HTTP/1.1 connections to local apps, by address.
// It sends a request and reads its answer on the calling goroutine, with
// net/http's Request.Write and ReadResponse: no goroutine per connection
// and no hand-off between goroutines, which is what http.Transport costs
// per request.
type h1Pool struct {
	p       *Proxy
	maxIdle int           // per address
	idleFor time.Duration // an idle connection older than this is closed

	mu     sync.Mutex
	idle   map[string][]*h1Conn
	closed bool
}

// h1Conn is one connection to an app.
type h1Conn struct {
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it was last put back
}

func newH1Pool(p *Proxy) *h1Pool {
	return &h1Pool{p: p, maxIdle: 256, idleFor: 90 * time.Second, idle: map[string][]*h1Conn{}}
}

// get returns an idle connection to addr, or nil.
func (h *h1Pool) get(addr string) *h1Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for cs := h.idle[addr]; len(cs) > 0; cs = h.idle[addr] {
		c := cs[len(cs)-1]
		h.idle[addr] = cs[:len(cs)-1]
		if now.Sub(c.used) < h.idleFor {
			return c
		}
		c.c.Close()
	}
	return nil
}

// put keeps c for the next request to addr.
func (h *h1Pool) put(addr string, c *h1Conn) {
	c.used = time.Now()
	h.mu.Lock()
	if !h.closed && len(h.idle[addr]) < h.maxIdle {
		h.idle[addr] = append(h.idle[addr], c)
		c = nil
	}
	h.mu.Unlock()
	if c != nil {
		c.c.Close()
	}
}

// dial connects to the app at addr.
func (h *h1Pool) dial(ctx context.Context, addr string) (*h1Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, h.p.cfg.LocalDialTimeout)
	defer cancel()
	c, err := h.p.deps.DialLocal(ctx, "tcp", addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		c = rawio.WrapTCP(tc)
	}
	return &h1Conn{c: c, br: bufio.NewReaderSize(c, 8<<10), bw: bufio.NewWriterSize(c, 8<<10)}, nil
}

// closeIdle closes every idle connection, and those put back later.
func (h *h1Pool) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for addr, cs := range h.idle {
		for _, c := range cs {
			c.c.Close()
		}
		delete(h.idle, addr)
	}
}

// Connection errors that show a pooled connection was closed by the app.
var (
	errConnReset  error = syscall.ECONNRESET
	errBrokenPipe error = syscall.EPIPE
)

// errStale is a pooled connection the app had closed while it was idle.
var errStale = errors.New("idle connection closed by the app")

// roundTrip sends req to the app at addr and returns its final answer;
// 1xx answers other than 101 are skipped. replay says whether req's body
// may be sent twice (none, or a buffered one): a pooled connection found
// closed is then replaced and the request sent again. The answer's body
// reads from the connection; closing it puts the connection back when the
// exchange ended cleanly.
func (h *h1Pool) roundTrip(ctx context.Context, req *http.Request, addr string, replay bool) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		c := h.get(addr)
		pooled := c != nil
		if c == nil {
			var err error
			if c, err = h.dial(ctx, addr); err != nil {
				return nil, err
			}
		}
		resp, err := h.exchange(ctx, c, req, addr, replay)
		if err == nil {
			return resp, nil
		}
		c.c.Close()
		if pooled && errors.Is(err, errStale) && replay && attempt == 0 {
			if req.GetBody != nil {
				if req.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
			continue
		}
		return nil, err
	}
}

// exchange runs one request on c.
func (h *h1Pool) exchange(ctx context.Context, c *h1Conn, req *http.Request, addr string, replay bool) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	written := make(chan error, 1)
	write := func() {
		body := req.Body
		if !replay {
			req.Body = h.p.interactive(body, req.ContentLength, c.bw)
		}
		err := req.Write(&streamWriter{bw: c.bw, p: h.p})
		req.Body = body
		if err == nil {
			err = c.bw.Flush()
		}
		written <- err
	}
	if replay {
		write()
		if err := <-written; err != nil {
			stop()
			return nil, errStaleIf(err)
		}
		written <- nil
	} else {
		go write()
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			stop()
			if !replay {
				<-written
			}
			return nil, errStaleIf(err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	resp.Body = &h1Body{ReadCloser: resp.Body, pool: h, c: c, addr: addr, resp: resp, written: written, stop: stop}
	return resp, nil
}

// errStaleIf marks an error that shows a connection closed before it
// answered anything.
func errStaleIf(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, errConnReset) || errors.Is(err, errBrokenPipe) {
		return errors.Join(errStale, err)
	}
	return err
}

// h1Body is an answer's body read from a pooled connection.
type h1Body struct {
	io.ReadCloser
	pool    *h1Pool
	c       *h1Conn
	addr    string
	resp    *http.Response
	written chan error
	stop    func() bool
	eof     bool
	once    sync.Once
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close puts the connection back if the answer was read to its end, the
// request written whole, and neither side asked to close; else it closes
// the connection.
func (b *h1Body) Close() error {
	b.once.Do(func() {
		b.ReadCloser.Close()
		reuse := b.eof && b.stop() && !b.resp.Close && !b.resp.Request.Close
		if reuse {
			select {
			case err := <-b.written:
				reuse = err == nil
			default:
				reuse = false // still writing: the app answered early
			}
		}
		if reuse {
			b.c.c.SetDeadline(time.Time{})
			b.pool.put(b.addr, b.c)
			return
		}
		b.c.c.Close()
	})
	return nil
}
