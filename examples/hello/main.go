// Command hello is the demo's web service: an HTTP server that answers every
// request with its own name and address, so that a caller can see which
// instance served it. GET /health answers 200 for the agent's health check.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	name := flag.String("name", "hello", "name to answer with")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s (%s), you are %s\n", *name, *addr, r.RemoteAddr)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("hello %s listening on %s", *name, *addr)
	log.Fatal(srv.ListenAndServe())
}
