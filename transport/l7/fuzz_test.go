package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/tunnel"
	"github.com/meshwork/meshwork/transport/wire"
)

// nowhere is a Router with no instance to send to: every request the
// server reads gets the mesh's 503.
type nowhere struct{}

func (nowhere) Destination() string { return "web" }

func (nowhere) Describe(c *observe.Call) { c.Destination = "web" }

func (nowhere) Open(context.Context, policy.Request, wire.TraceContext, []string) (*Attempt, error) {
	return nil, fmt.Errorf("%w: web", tunnel.ErrNoInstance)
}

// FuzzServeH1 feeds what an application could send on a VIP connection to
// the HTTP/1.1 server: never a panic or a hang, and whatever it answers is
// a sequence of well-formed responses that are the mesh's own (nothing
// can be routed), at most one per request.
func FuzzServeH1(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: web\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: web\r\n\r\nGET /2 HTTP/1.1\r\nHost: web\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello",
		"POST /u HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: web\r\nX-Meshwork-Deadline-Ms: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: web\r\nGrpc-Timeout: 99999999H\r\n\r\n",
		"\x00\x01garbage\r\n\r\n",
		"GET / HTTP/1.1\r\n" + string(bytes.Repeat([]byte("X-A: b\r\n"), 50)) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	p, err := New(Config{MaxHeaderBytes: 4096, HeaderTimeout: time.Second, IdleTimeout: time.Second}, Deps{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { p.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		app := c.(*net.TCPConn)
		agent, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			hl := limitHead(agent, -1)
			br := bufio.NewReader(hl)
			p.serveH1(context.Background(), agent, hl, br, nowhere{})
			agent.Close()
		}()
		out := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(app)
			out <- b
		}()
		app.SetWriteDeadline(time.Now().Add(2 * time.Second))
		app.Write(in)
		// An application that sent everything and waits for answers.
		app.CloseWrite()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not finish with the input")
		}
		app.Close()
		answers := <-out
		br := bufio.NewReader(bytes.NewReader(answers))
		for n := 0; ; n++ {
			if _, err := br.Peek(1); errors.Is(err, io.EOF) {
				break
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer %d is not a response: %v\n%q", n, err, answers)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusContinue && resp.Header.Get(ErrorHeader) == "" {
				t.Fatalf("answer %d is not the mesh's own: %d %v", n, resp.StatusCode, resp.Header)
			}
		}
	})
}
