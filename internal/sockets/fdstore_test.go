package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// notifyReceiver is a unix datagram socket standing in for systemd's
// notification socket.
type notifyReceiver struct {
	t    *testing.T
	conn *net.UnixConn
	addr string
}

func newNotifyReceiver(t *testing.T, addr string) *notifyReceiver {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifyReceiver{t: t, conn: conn, addr: addr}
}

// next returns the next message and the descriptors it carried.
func (r *notifyReceiver) next() (string, []int) {
	r.t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(16*4))
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := r.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		r.t.Fatalf("notify socket: %v", err)
	}
	var fds []int
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		r.t.Fatal(err)
	}
	for _, m := range msgs {
		got, err := syscall.ParseUnixRights(&m)
		if err != nil {
			r.t.Fatal(err)
		}
		fds = append(fds, got...)
	}
	r.t.Cleanup(func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	})
	return string(buf[:n]), fds
}

// sockname is the bound address of fd, as "ip:port".
func sockname(t *testing.T, fd int) string {
	t.Helper()
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname(%d): %v", fd, err)
	}
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return (&net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}).String()
	case *syscall.SockaddrInet6:
		return (&net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}).String()
	}
	t.Fatalf("fd %d: unexpected address %T", fd, sa)
	return ""
}

// TestNotifyFDStore sends a listener the way sd_pid_notify_with_fds does, to
// a path and to an abstract address, and checks that the descriptor that
// arrives is the same socket: same address, and a connection to it is
// accepted through the received descriptor.
func TestNotifyFDStore(t *testing.T) {
	for _, tt := range []struct{ name, addr string }{
		{"path", filepath.Join(t.TempDir(), "notify")},
		{"abstract", fmt.Sprintf("@meshwork-sockets-test-%d", os.Getpid())},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newNotifyReceiver(t, tt.addr)
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			f, err := ln.File()
			if err != nil {
				t.Fatal(err)
			}
			if err := NotifyFDStore(tt.addr, "api", f); err != nil {
				t.Fatal(err)
			}
			f.Close()
			ln.Close() // the receiver now holds the only descriptor

			msg, fds := r.next()
			if msg != "FDSTORE=1\nFDNAME=api" {
				t.Errorf("message %q", msg)
			}
			if len(fds) != 1 {
				t.Fatalf("got %d descriptors, want 1", len(fds))
			}
			if got := sockname(t, fds[0]); got != ln.Addr().String() {
				t.Errorf("received socket bound to %s, want %s", got, ln.Addr())
			}
			// Accept a connection through the received descriptor.
			dup, err := dupCloexec(fds[0])
			if err != nil {
				t.Fatal(err)
			}
			stored, err := net.FileListener(os.NewFile(uintptr(dup), "stored"))
			if err != nil {
				t.Fatal(err)
			}
			defer stored.Close()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatalf("dial the stored socket: %v", err)
			}
			defer c.Close()
			a, err := stored.Accept()
			if err != nil {
				t.Fatal(err)
			}
			a.Close()

			if err := NotifyFDStoreRemove(tt.addr, "api"); err != nil {
				t.Fatal(err)
			}
			if msg, fds := r.next(); msg != "FDSTOREREMOVE=1\nFDNAME=api" || len(fds) != 0 {
				t.Errorf("remove: %q with %d descriptors", msg, len(fds))
			}
		})
	}
}

func TestNotifyFDStoreErrors(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := NotifyFDStore("", "api", f); !errors.Is(err, ErrNoNotifySocket) {
		t.Errorf("no socket: %v", err)
	}
	if err := NotifyFDStore("/nonexistent/notify", "vip:1:2", f); !errors.Is(err, ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
	if err := NotifyFDStore(filepath.Join(t.TempDir(), "none"), "api", f); err == nil {
		t.Error("no receiver: no error")
	}
}

// TestStoreInSystemd: the store follows the set: every open socket once, a
// closed one removed, nothing sent when nothing changed.
func TestStoreInSystemd(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	r := newNotifyReceiver(t, addr)
	t.Setenv("NOTIFY_SOCKET", addr)

	s := New(nil)
	api, err := s.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	vipName := ListenerName("127.0.0.1:0")
	vip, err := s.Listener(vipName, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.HeldBySystemd() {
		t.Error("HeldBySystemd before anything was stored")
	}
	if err := s.StoreInSystemd(); err != nil {
		t.Fatal(err)
	}
	if !s.HeldBySystemd() {
		t.Error("HeldBySystemd false after every socket was stored")
	}
	got := map[string]string{}
	for range 2 {
		msg, fds := r.next()
		if len(fds) != 1 {
			t.Fatalf("%q came with %d descriptors", msg, len(fds))
		}
		got[msg] = sockname(t, fds[0])
	}
	if got["FDSTORE=1\nFDNAME=api"] != api.Addr().String() || got["FDSTORE=1\nFDNAME="+vipName] != vip.Addr().String() {
		t.Errorf("stored %v", got)
	}
	assertNonblocking(t, api.(syscall.Conn))

	vip.Close()
	if err := s.StoreInSystemd(); err != nil {
		t.Fatal(err)
	}
	if msg, _ := r.next(); msg != "FDSTOREREMOVE=1\nFDNAME="+vipName {
		t.Errorf("after the VIP closed: %q", msg)
	}
	if !s.HeldBySystemd() {
		t.Error("HeldBySystemd false with the one open socket stored")
	}
	// A socket opened since the last store is not held: its connections
	// would be refused once this process closes it.
	late, err := s.Listener(ListenerName("127.0.0.2:0"), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.HeldBySystemd() {
		t.Error("HeldBySystemd true with a socket opened after the store")
	}
	late.Close()

	// Nothing changed: nothing is sent, so the next datagram is ours.
	if err := s.StoreInSystemd(); err != nil {
		t.Fatal(err)
	}
	if err := sendNotify(addr, "MARK=1", -1); err != nil {
		t.Fatal(err)
	}
	if msg, _ := r.next(); msg != "MARK=1" {
		t.Errorf("unchanged set sent %q", msg)
	}
}

// TestReopenStoredListener: a VIP whose listener closed (its service left
// the catalog) and is opened again at the same address (it came back)
// while systemd's store still holds the socket gets that same socket: a
// connection made in between waited in its queue and is accepted, and
// nothing is sent to systemd.
func TestReopenStoredListener(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	r := newNotifyReceiver(t, addr)
	t.Setenv("NOTIFY_SOCKET", addr)

	s := New(nil)
	name := ListenerName("127.0.0.1:0")
	vip, err := s.Listener(name, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bound := vip.Addr().String()
	if err := s.StoreInSystemd(); err != nil {
		t.Fatal(err)
	}
	r.next() // the fake systemd holds the socket from here
	vip.Close()
	between, err := net.Dial("tcp", bound)
	if err != nil {
		t.Fatalf("dial while the listener is closed and the store holds it: %v", err)
	}
	defer between.Close()

	again, err := s.Listener(name, "tcp", bound)
	if err != nil {
		t.Fatalf("reopen %s while systemd's store held it: %v", bound, err)
	}
	defer again.Close()
	_ = again.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := again.Accept()
	if err != nil {
		t.Fatalf("the connection made while the listener was closed was not accepted: %v", err)
	}
	c.Close()
	if err := s.StoreInSystemd(); err != nil {
		t.Fatal(err)
	}
	if err := sendNotify(addr, "MARK=1", -1); err != nil {
		t.Fatal(err)
	}
	if msg, _ := r.next(); msg != "MARK=1" {
		t.Errorf("reopening the stored socket sent %q to systemd", msg)
	}
}

// TestReopenReleasesStoredListener: a name systemd's store holds, which
// this process cannot reuse (a socket a previous process stored), is
// released before it is bound anew: the old socket, bound and listening
// there, would make the bind fail for as long as systemd held it.
func TestReopenReleasesStoredListener(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "notify")
	r := newNotifyReceiver(t, addr)
	t.Setenv("NOTIFY_SOCKET", addr)

	s := New(nil)
	name := ListenerName("127.0.0.1:0")
	vip, err := s.Listener(name, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bound := vip.Addr().String()
	if err := s.StoreInSystemd(); err != nil {
		t.Fatal(err)
	}
	_, fds := r.next() // the fake systemd holds the socket from here
	held := fds[0]
	vip.Close()
	s.mu.Lock()
	s.dropKept(name) // as if another process had stored it
	s.mu.Unlock()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()

	// The fake systemd closes what it is asked to remove, as systemd does:
	// the descriptor is made /dev/null, which drops the socket and leaves
	// the number for the receiver's cleanup to close.
	removed := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := r.conn.Read(buf)
		msg := string(buf[:n])
		if err == nil && msg == "FDSTOREREMOVE=1\nFDNAME="+name {
			_ = syscall.Dup2(int(devNull.Fd()), held)
		}
		removed <- msg
	}()
	again, err := s.Listener(name, "tcp", bound)
	if err != nil {
		t.Fatalf("reopen %s while systemd's store held it: %v", bound, err)
	}
	defer again.Close()
	if msg := <-removed; msg != "FDSTOREREMOVE=1\nFDNAME="+name {
		t.Errorf("systemd was sent %q, want the removal of %s", msg, name)
	}
	if again.Addr().String() != bound {
		t.Errorf("reopened at %s, want %s", again.Addr(), bound)
	}
}
