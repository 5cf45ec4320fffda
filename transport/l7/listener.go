package l7

import (
	"net"
	"sync"
)

// appConnKey is the context key of a request's *appConn.
type appConnKey struct{}

// appConn is an application's connection that ServeConn handed to the HTTP
// server, with the Router of its destination. done is closed when the
// server (or a hijacker) closes it, ending ServeConn.
type appConn struct {
	*net.TCPConn
	router Router
	once   sync.Once
	done   chan struct{}
}

// Close closes the connection and ends its ServeConn.
func (c *appConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// connListener is the net.Listener the HTTP server accepts ServeConn's
// connections from.
type connListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the server; false once the listener is closed.
func (l *connListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr implements net.Listener.
func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }
