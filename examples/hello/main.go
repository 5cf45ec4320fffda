// Command hello is the demo's web service: an HTTP server that answers every
// request with its own name and address, so that a caller can see which
// instance served it. GET /health answers 200 for the agent's health check.
// ?delay=2s holds the answer that long (at most 30 s), so that a test can keep
// a request in flight.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

const maxDelay = 30 * time.Second

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	name := flag.String("name", "hello", "name to answer with")
	flag.Parse()

	srv := &http.Server{Addr: *addr, Handler: newMux(*name, *addr), ReadHeaderTimeout: 5 * time.Second}
	log.Printf("hello %s listening on %s", *name, *addr)
	log.Fatal(srv.ListenAndServe())
}

// newMux answers as the instance name listening on addr.
func newMux(name, addr string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if d := r.URL.Query().Get("delay"); d != "" {
			wait, err := time.ParseDuration(d)
			if err != nil || wait < 0 || wait > maxDelay {
				http.Error(w, fmt.Sprintf("delay %q: want a duration from 0 to %s", d, maxDelay), http.StatusBadRequest)
				return
			}
			select {
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "hello from %s (%s), you are %s\n", name, addr, r.RemoteAddr)
	})
	return mux
}
