package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestRawTCPMovesBulkAndEnds writes more than the socket buffers hold
// through a raw connection, so that writes wait for room, then half-closes
// and checks the reader sees every byte and then EOF.
func TestRawTCPMovesBulkAndEnds(t *testing.T) {
	if !Enabled {
		t.Skip("raw calls turned off")
	}
	a, b := tcpPair(t)
	ra, rb := WrapTCP(a), WrapTCP(b)
	if _, ok := ra.(*TCPConn); !ok {
		t.Fatalf("rawTCPConn gave %T", ra)
	}
	payload := bytes.Repeat([]byte("meshwork raw tcp "), 1<<18) // 4.25 MiB
	wrote := make(chan error, 1)
	go func() {
		n, err := ra.Write(payload)
		if err == nil && n != len(payload) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = ra.(*TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	got, err := io.ReadAll(rb)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, want the %d written, intact", len(got), len(payload))
	}
}

// TestRawTCPReadEndsAtDeadlineAndClose checks that a raw read waiting for
// data ends at the read deadline and when the connection closes.
func TestRawTCPReadEndsAtDeadlineAndClose(t *testing.T) {
	a, _ := tcpPair(t)
	ra := WrapTCP(a)
	buf := make([]byte, 64)
	ra.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := ra.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	}
	ra.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := ra.Read(buf)
		done <- err
	}()
	ra.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
	}
}

// TestRawTCPWriteToAResetPeerFails checks that a write to a connection
// the peer reset returns an error rather than hanging.
func TestRawTCPWriteToAResetPeerFails(t *testing.T) {
	a, b := tcpPair(t)
	b.SetLinger(0)
	b.Close()
	ra := WrapTCP(a)
	var err error
	for range 100 { // the first writes may land before the reset does
		if _, err = ra.Write([]byte("x")); err != nil {
			break
		}
		ra.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		ra.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
}
