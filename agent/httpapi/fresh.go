package httpapi

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// freshConns tracks the connections accepted whose first request has not
// been read yet. net/http's Shutdown closes such a connection without an
// answer once it reads a request, so StopAccepting waits for them to become
// active before Close may shut the server down.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	empty chan struct{} // closed when conns becomes empty; nil while it is
}

// track is the server's ConnState hook.
func (f *freshConns) track(c net.Conn, st http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == http.StateNew {
		if f.conns == nil {
			f.conns = map[net.Conn]struct{}{}
		}
		f.conns[c] = struct{}{}
		return
	}
	if _, ok := f.conns[c]; !ok {
		return
	}
	delete(f.conns, c)
	if len(f.conns) == 0 && f.empty != nil {
		close(f.empty)
		f.empty = nil
	}
}

// wait returns once no accepted connection waits for its first request, or
// after d: a client that connected and sends nothing is not waited for.
func (f *freshConns) wait(d time.Duration) {
	f.mu.Lock()
	if len(f.conns) == 0 {
		f.mu.Unlock()
		return
	}
	if f.empty == nil {
		f.empty = make(chan struct{})
	}
	empty := f.empty
	f.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-empty:
	case <-t.C:
	}
}
