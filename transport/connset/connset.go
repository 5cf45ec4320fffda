// Package connset keeps the connections a protocol handler carries, so
// that closing the handler cuts them: applications see a reset, not a
// clean end, and know their exchange failed.
package connset

import (
	"io"
	"net"
	"sync"
)

// Set is a set of connections. The zero value is ready for use; it is
// safe for concurrent use.
type Set struct {
	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
}

// Add registers c to be cut by Close; it reports false (and closes c)
// when the set is already closed.
func (s *Set) Add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.conns == nil {
		s.conns = map[io.Closer]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

// Remove forgets c.
func (s *Set) Remove(c io.Closer) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close cuts every connection (a TCP connection with a reset) and closes
// those added later as they come. Idempotent.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // applications must see a failure, not an end
		}
		c.Close()
		delete(s.conns, c)
	}
}
