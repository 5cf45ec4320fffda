package connset

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
)

// TestCloseResets cuts a carried TCP connection with a reset, and closes a
// connection added after Close at once.
func TestCloseResets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var s Set
	if !s.Add(c) {
		t.Fatal("Add refused before Close")
	}
	s.Close()
	if _, err := io.ReadAll(peer); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer read after Close: %v, want a reset", err)
	}
	late, _ := net.Pipe()
	if s.Add(late) {
		t.Fatal("Add accepted a connection after Close")
	}
	if _, err := late.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("a connection added after Close is open: %v", err)
	}
}
