package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
)

// appBodySize is the size of every answer of the HTTP app.
const appBodySize = 1024

// runApp is the HTTP/1.1 app, a child process of its own so that its CPU is
// nobody else's: Go net/http answering every request with 1 KiB.
func runApp(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           appHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	fmt.Fprintln(os.Stderr, "app: serving on", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// appHandler answers every request with appBodySize bytes, after reading
// the request's body.
func appHandler() http.Handler {
	body := bytes.Repeat([]byte("x"), appBodySize)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(appBodySize))
		_, _ = w.Write(body)
	})
}

// startApp starts the 1 KiB HTTP app (this program with -role app) on h,
// listening on addr.
func startApp(procs *procSet, h cpuhost.Host, work, addr string) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return procs.start(h, work, "app", self, "-role", "app", "-listen", addr)
}
