package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// testEnv starts every path for one test.
func testEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, err := newEnv(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { e.close(); cancel() })
	return e
}

// post sends body to url with idHeader set to id and returns the answer.
func post(t *testing.T, c *http.Client, url, id string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(idHeader, id)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read answer: %v", url, err)
	}
	return resp, got
}

func TestEveryPathAnswersEachRequest(t *testing.T) {
	e := testEnv(t)
	if len(e.paths) != 4 {
		t.Fatalf("%d paths, want direct, http3, stream and stream-wait", len(e.paths))
	}
	for _, p := range e.paths {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(2)
			defer c.CloseIdleConnections()
			for i := range 5 {
				body := bytes.Repeat([]byte{byte('a' + i)}, bodySize-i) // each request its own body and size
				id := fmt.Sprintf("%s-%d", p.name, i)
				resp, got := post(t, c, p.url+echoPath, id, body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: status %d (%s), want 200", i, resp.StatusCode, got)
				}
				if !bytes.Equal(got, body) {
					t.Fatalf("request %d: answer of %d bytes is not the %d sent", i, len(got), len(body))
				}
				if h := resp.Header.Get(idHeader); h != id {
					t.Errorf("request %d: %s answered %q, want %q", i, idHeader, h, id)
				}
				seen := resp.Header.Get(seenDeadlineHeader)
				if p.name == pathDirect {
					if seen != "" {
						t.Errorf("request %d: the app saw a deadline %q with no hop", i, seen)
					}
					continue
				}
				ms, err := strconv.ParseInt(seen, 10, 64)
				if err != nil || ms <= 0 || ms > budget.Milliseconds() {
					t.Errorf("request %d: the app saw deadline %q ms, want 1..%d", i, seen, budget.Milliseconds())
				}
			}
			if err := call(context.Background(), c, p.url+echoPath); err != nil {
				t.Errorf("the load's own call: %v", err)
			}
		})
	}
}

// TestTrailersReachTheClient checks that a response trailer (gRPC's
// grpc-status) crosses every path: HTTP/3 carries it natively, the stream
// framing as an HTTP/1.1 chunked trailer.
func TestTrailersReachTheClient(t *testing.T) {
	e := testEnv(t)
	for _, p := range e.paths {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(1)
			defer c.CloseIdleConnections()
			body := bytes.Repeat([]byte("t"), bodySize)
			resp, got := post(t, c, p.url+trailerPath, "trailer", body)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
				t.Fatalf("status %d, %d bytes; want 200 and the %d sent", resp.StatusCode, len(got), len(body))
			}
			if v := resp.Trailer.Get("Grpc-Status"); v != "0" {
				t.Errorf("trailer Grpc-Status %q, want \"0\" (trailers %v)", v, resp.Trailer)
			}
		})
	}
}

// TestHeldRequestDoesNotBlockOthers holds one request in the app and
// checks that another one through the same hops, and so the same QUIC
// connection, is answered meanwhile. It waits on events, not on time.
func TestHeldRequestDoesNotBlockOthers(t *testing.T) {
	e := testEnv(t)
	for _, p := range e.paths[1:] {
		t.Run(p.name, func(t *testing.T) {
			held := make(chan error, 1)
			go func() {
				c := newClient(1)
				defer c.CloseIdleConnections()
				held <- call(context.Background(), c, p.url+blockPath)
			}()
			select {
			case <-e.app.blocked:
			case err := <-held:
				t.Fatalf("held request ended before the app held it: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the held request never reached the app")
			}
			// Bounded, so that a path that queues requests behind the held
			// one fails here rather than hanging.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := newClient(1)
			defer c.CloseIdleConnections()
			if err := call(ctx, c, p.url+echoPath); err != nil {
				t.Errorf("request beside a held one: %v", err)
			}
			e.app.release <- struct{}{}
			if err := <-held; err != nil {
				t.Errorf("held request, once released: %v", err)
			}
		})
	}
}
