package sockets

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshwork/meshwork/internal/clock"
)

// logBuffer collects a logger's lines for a test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

// tcpPair returns an established connection on loopback: the peer's end,
// which the test keeps, and the socket of the other end, to hand over.
func tcpPair(t *testing.T) (net.Conn, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // f holds the socket
	t.Cleanup(func() { f.Close() })
	return peer, f
}

// assertCarried checks that the handed-over socket f still carries the
// connection both ways.
func assertCarried(t *testing.T, peer net.Conn, f *os.File) {
	t.Helper()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer c.Close()
	fmt.Fprintf(c, "to the peer\n")
	if got := readLine(t, peer); got != "to the peer" {
		t.Errorf("peer read %q", got)
	}
	fmt.Fprintf(peer, "from the peer\n")
	if got := readLine(t, c); got != "from the peer" {
		t.Errorf("handed-over socket read %q", got)
	}
}

// assertReset checks that the peer's connection was reset, not ended.
func assertReset(t *testing.T, what string, peer net.Conn) {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := peer.Read(make([]byte, 16))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%s: the peer read %v, want a reset", what, err)
	}
}

// helperConns is a successor that takes the connections its predecessor
// sends and, for each, reports on stdout its name and meta, writes
// "successor <name>" on it and reports the line its peer sends back. With
// HELPER_OLD set it is a binary that predates connections: it ignores
// HandoffConnsEnv.
func helperConns() int {
	if os.Getenv("HELPER_OLD") != "" {
		os.Unsetenv(HandoffConnsEnv)
	}
	s, err := Inherit(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.AwaitStart(ctx); err != nil {
		return 3
	}
	if err := s.SignalReady(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.AwaitHandover(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	conns, err := s.TakeConns(ctx, "")
	if err != nil {
		fmt.Println("take error:", err)
	}
	greetTaken(conns, true)
	if again, _ := s.TakeConns(ctx, ""); len(again) != 0 {
		fmt.Println("second take:", len(again))
	}
	fmt.Println("done")
	return 0
}

// startConnsHelper starts the "conns" helper as the successor of s and
// returns it prepared, with its standard output.
func startConnsHelper(t *testing.T, s *Set, env ...string) (*Successor, *bufio.Reader) {
	t.Helper()
	cmd := helperCmd(t, "conns", env...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	succ, err := s.StartSuccessor(ctx, cmd)
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { succ.Abort(); r.Close() })
	return succ, bufio.NewReader(r)
}

// TestSendConnsAcrossReexec hands two established connections to a real
// new process. The predecessor closes its copies; the successor gets each
// with its meta, and bytes flow both ways between it and the peers.
func TestSendConnsAcrossReexec(t *testing.T) {
	s := New(nil)
	peerA, fileA := tcpPair(t)
	peerB, fileB := tcpPair(t)
	succ, out := startConnsHelper(t, s)
	if !succ.TakesConns() {
		t.Fatal("the successor does not say it takes connections")
	}

	n, err := succ.SendConns([]HeldConn{
		{Name: "a1b2", File: fileA, Meta: []byte("meta-a")},
		{Name: "c3d4", File: fileB, Meta: []byte("meta-b")},
	})
	if err != nil || n != 2 {
		t.Fatalf("SendConns = %d, %v; want 2 sent", n, err)
	}
	if _, err := succ.SendConns(nil); err == nil {
		t.Error("a second SendConns did not fail")
	}
	// The predecessor lets go of its copies: the successor's keep the
	// connections open.
	fileA.Close()
	fileB.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := succ.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := succ.Handover(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, meta string
		peer       net.Conn
	}{{"a1b2", "meta-a", peerA}, {"c3d4", "meta-b", peerB}} {
		if got, want := nextLine(t, out), "conn "+tc.name+" "+tc.meta; got != want {
			t.Fatalf("successor: %q, want %q", got, want)
		}
		if got := readLine(t, tc.peer); got != "successor "+tc.name {
			t.Errorf("peer of %s read %q from the successor", tc.name, got)
		}
		fmt.Fprintf(tc.peer, "peer %s\n", tc.name)
		if got, want := nextLine(t, out), fmt.Sprintf("read %q <nil>", "peer "+tc.name); got != want {
			t.Errorf("successor: %s, want %s", got, want)
		}
	}
	if got := nextLine(t, out); got != "done" {
		t.Errorf("successor: %q, want done", got)
	}
	if err := succ.Wait(); err != nil {
		t.Errorf("successor: %v", err)
	}
}

// TestSendConnsToOlderSuccessor: a successor that does not read
// connections (a rollback to a binary that predates them) is sent none:
// they would sit unread in its socket buffer, open and never resumed.
func TestSendConnsToOlderSuccessor(t *testing.T) {
	s := New(nil)
	peer, file := tcpPair(t)
	succ, out := startConnsHelper(t, s, "HELPER_OLD=1")
	if succ.TakesConns() {
		t.Error("an older successor says it takes connections")
	}
	n, err := succ.SendConns([]HeldConn{{Name: "a1", File: file}})
	if !errors.Is(err, ErrSuccessorTakesNoConns) || n != 0 {
		t.Fatalf("SendConns = %d, %v; want 0, ErrSuccessorTakesNoConns", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := succ.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := succ.Handover(); err != nil {
		t.Fatal(err)
	}
	if got := nextLine(t, out); got != "done" {
		t.Errorf("successor: %q, want done", got)
	}
	if err := succ.Wait(); err != nil {
		t.Errorf("successor: %v", err)
	}
	assertCarried(t, peer, file) // still the predecessor's
}

// TestSendConnsRefusesBadConns: a connection that cannot be carried stops
// SendConns there, with what was wrong; those before it are sent.
func TestSendConnsRefusesBadConns(t *testing.T) {
	_, file := tcpPair(t)
	tests := []struct {
		name string
		bad  HeldConn
		want error
	}{
		{"bad name", HeldConn{Name: "a.b", File: file}, ErrBadName},
		{"long name", HeldConn{Name: strings.Repeat("a", 65), File: file}, ErrBadName},
		{"empty name", HeldConn{File: file}, ErrBadName},
		{"oversize meta", HeldConn{Name: "b", File: file, Meta: make([]byte, MaxConnMeta+1)}, ErrBadHeldConn},
		{"no socket", HeldConn{Name: "b"}, ErrBadHeldConn},
		{"twice", HeldConn{Name: "a", File: file}, ErrBadHeldConn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, remote, err := connPair()
			if err != nil {
				t.Fatal(err)
			}
			defer remote.Close()
			r := receiveConns(slog.New(slog.DiscardHandler), remote)
			p := &Successor{connsW: local}
			defer p.closeConns()
			n, err := p.SendConns([]HeldConn{{Name: "a", File: file, Meta: []byte("ok")}, tt.bad})
			if n != 1 || !errors.Is(err, tt.want) {
				t.Fatalf("SendConns = %d, %v; want 1 sent and %v", n, err, tt.want)
			}
			p.closeConns()
			got, err := r.take(context.Background())
			if err != nil || len(got) != 1 || got[0].Name != "a" || string(got[0].Meta) != "ok" {
				t.Errorf("received %v, %v; want a with its meta", got, err)
			}
			for _, c := range got {
				c.File.Close()
			}
		})
	}
}

// TestReceiveConnsRefusesMalformed sends the successor's reader malformed
// messages between two good ones: each is refused with a logged error, its
// sockets reset, and the reader goes on.
func TestReceiveConnsRefusesMalformed(t *testing.T) {
	local, remote, err := connPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	logger, logs := testLogger()
	r := receiveConns(logger, remote)
	hello := make([]byte, 64)
	n, err := local.Read(hello)
	if err != nil || string(hello[:n]) != connsHello {
		t.Fatalf("hello: %q, %v", hello[:n], err)
	}

	rc, err := local.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	send := func(body []byte, files ...*os.File) {
		t.Helper()
		var fds []int
		for _, f := range files {
			fds = append(fds, int(f.Fd()))
		}
		var oob []byte
		if len(fds) > 0 {
			oob = syscall.UnixRights(fds...)
		}
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			serr = unix.Sendmsg(int(fd), body, oob, nil, 0)
			return serr != unix.EAGAIN
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		for _, f := range files {
			f.Close() // the reader's copy is the last
		}
	}
	entry := func(name string, meta []byte) []byte { return appendConnEntry(nil, name, meta) }
	oversizeMeta := binary.BigEndian.AppendUint16([]byte{2, 'o', 'm'}, MaxConnMeta+1)
	oversizeMeta = append(oversizeMeta, make([]byte, MaxConnMeta+1)...)
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeW.Close()

	goodPeer1, good1 := tcpPair(t)
	send(entry("good1", []byte("m1")), good1)
	var resets []net.Conn
	// refused sends body with n sockets, of which the first reset must be
	// reset; the kernel closes those beyond the room for control data
	// (with a FIN) before the reader sees them.
	refused := func(body []byte, n, reset int) {
		t.Helper()
		var files []*os.File
		for i := range n {
			peer, f := tcpPair(t)
			if i < reset {
				resets = append(resets, peer)
			}
			files = append(files, f)
		}
		send(body, files...)
	}
	refused(entry("bad.name", nil), 1, 1)
	refused(oversizeMeta, 1, 1)
	refused(make([]byte, maxConnEntry+10), 1, 1)                        // longer than any entry
	refused(append(entry("trailing", nil), 'x'), 1, 1)                  // bytes after the entry
	refused(entry("good1", []byte("again")), 1, 1)                      // a name sent twice
	refused(entry("twofds", nil), 2, 2)                                 // two descriptors
	refused(entry("sixfds", nil), maxFDsPerConnMsg+2, maxFDsPerConnMsg) // control data cut
	refused([]byte{}, 1, 1)                                             // empty body (sent as one zero byte)
	refused(entry("nofd", nil), 0, 0)                                   // no descriptor
	send(entry("apipe", nil), pipeR)                                    // not a socket
	goodPeer2, good2 := tcpPair(t)
	send(entry("good2", []byte("m2")), good2)
	local.Close() // the end

	got, err := r.take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "good1" || string(got[0].Meta) != "m1" || got[1].Name != "good2" || string(got[1].Meta) != "m2" {
		t.Fatalf("received %+v, want good1 and good2 with their meta", got)
	}
	assertCarried(t, goodPeer1, got[0].File)
	assertCarried(t, goodPeer2, got[1].File)
	for i, peer := range resets {
		assertReset(t, fmt.Sprintf("refused socket %d", i), peer)
	}
	text := logs.String()
	for _, want := range []string{
		"bad.name", "meta length 4097", "longer than 4163 bytes", "trailing: 1 bytes after the entry",
		"good1: sent twice", "2 descriptors in one message", "more than 4 descriptors",
		"name length 0 at byte 0", "0 descriptors in one message", "apipe: the descriptor is not a stream socket",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the log does not say %q:\n%s", want, text)
		}
	}
	if c := strings.Count(text, "connection from the predecessor refused"); c != 10 {
		t.Errorf("%d refusals logged, want 10:\n%s", c, text)
	}
}

// TestTakeConnsBoundedByContext: a predecessor that does not close its side
// holds TakeConns only until ctx ends; the reader then stops, and a later
// send fails instead of handing over a connection nobody takes.
func TestTakeConnsBoundedByContext(t *testing.T) {
	local, remote, err := connPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	s := New(nil)
	s.connsIn = receiveConns(slog.New(slog.DiscardHandler), remote)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.TakeConns(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("TakeConns = %v, want context.Canceled", err)
	}
	_, file := tcpPair(t)
	p := &Successor{connsW: local}
	if n, err := p.SendConns([]HeldConn{{Name: "late", File: file}}); n != 0 || err == nil {
		t.Errorf("SendConns after the successor stopped reading = %d, %v; want an error", n, err)
	}
}

// fakeSystemd is a notify socket standing in for systemd, and the clock
// of the Set under test.
func fakeSystemd(t *testing.T) (*notifyReceiver, string) {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify")
	r := newNotifyReceiver(t, addr)
	t.Setenv("NOTIFY_SOCKET", addr)
	return r, addr
}

// TestStoreAndTakeConnsThroughSystemd: StoreConnsInSystemd stores each
// connection with FDPOLL=0 and writes the state file; a Set handed those
// descriptors as systemd would returns them with their meta, removes them
// from the store and removes the file, and the connections carry bytes.
func TestStoreAndTakeConnsThroughSystemd(t *testing.T) {
	r, _ := fakeSystemd(t)
	start := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	clk := clock.NewManual(start)
	metaPath := filepath.Join(t.TempDir(), "state", "conns")

	s := New(nil)
	s.clock = clk
	peerA, fileA := tcpPair(t)
	peerB, fileB := tcpPair(t)
	n, err := s.StoreConnsInSystemd(metaPath, []HeldConn{
		{Name: "a1", File: fileA, Meta: []byte("meta-a")},
		{Name: "B_2-x", File: fileB}, // no meta is fine
	})
	if err != nil || n != 2 {
		t.Fatalf("StoreConnsInSystemd = %d, %v; want 2", n, err)
	}
	held := map[string]int{}
	for _, name := range []string{"a1", "B_2-x"} {
		msg, fds := r.next()
		if want := "FDSTORE=1\nFDNAME=conn-" + name + "\nFDPOLL=0"; msg != want || len(fds) != 1 {
			t.Fatalf("systemd got %q with %d descriptors, want %q with 1", msg, len(fds), want)
		}
		held[name] = fds[0]
	}
	st, err := os.Stat(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", st.Mode().Perm())
	}
	written, entries, err := readConnState(metaPath)
	if err != nil || !written.Equal(start) || len(entries) != 2 {
		t.Fatalf("state file: %v, %v, %v", written, entries, err)
	}
	// This agent stops: only systemd's copies are left.
	fileA.Close()
	fileB.Close()

	// The next agent, handed the store as LISTEN_FDS, a few seconds later.
	clk.Advance(3 * time.Second)
	next := New(nil)
	next.clock = clk
	for name, fd := range held {
		dup, err := dupCloexec(fd)
		if err != nil {
			t.Fatal(err)
		}
		next.add("conn-"+name, os.NewFile(uintptr(dup), "conn-"+name), "systemd")
	}
	if got := next.Inherited(); len(got) != 0 {
		t.Errorf("Inherited() = %v: held connections counted as listeners", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conns, err := next.TakeConns(ctx, metaPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 2 || conns[0].Name != "B_2-x" || len(conns[0].Meta) != 0 || conns[1].Name != "a1" || string(conns[1].Meta) != "meta-a" {
		t.Fatalf("TakeConns = %+v", conns)
	}
	removed := map[string]bool{}
	for range 2 {
		msg, fds := r.next()
		removed[msg] = len(fds) == 0
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	for _, name := range []string{"a1", "B_2-x"} {
		if !removed["FDSTOREREMOVE=1\nFDNAME=conn-"+name] {
			t.Errorf("conn-%s not removed from the store: %v", name, removed)
		}
		// systemd closes its copy; /dev/null in its place keeps the number
		// for the receiver's cleanup to close.
		if err := syscall.Dup2(int(devNull.Fd()), held[name]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(metaPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state file still there after TakeConns: %v", err)
	}
	if again, err := next.TakeConns(ctx, metaPath); len(again) != 0 || err != nil {
		t.Errorf("second TakeConns = %v, %v; want nothing", again, err)
	}
	assertCarried(t, peerB, conns[0].File)
	assertCarried(t, peerA, conns[1].File)
}

// TestStoreConnsInSystemdRefuses: StoreConnsInSystemd stops at the first
// connection it cannot carry, and the state file names exactly those
// stored.
func TestStoreConnsInSystemdRefuses(t *testing.T) {
	_, file := tcpPair(t)
	_, other := tcpPair(t)
	good := HeldConn{Name: "good", File: file, Meta: []byte("m")}
	tests := []struct {
		name string
		bad  HeldConn
		want error
	}{
		{"bad name", HeldConn{Name: "a b", File: other}, ErrBadName},
		{"oversize meta", HeldConn{Name: "big", File: other, Meta: make([]byte, MaxConnMeta+1)}, ErrBadHeldConn},
		{"no socket", HeldConn{Name: "none"}, ErrBadHeldConn},
		{"twice", HeldConn{Name: "good", File: other}, ErrBadHeldConn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := fakeSystemd(t)
			metaPath := filepath.Join(t.TempDir(), "conns")
			n, err := New(nil).StoreConnsInSystemd(metaPath, []HeldConn{good, tt.bad})
			if n != 1 || !errors.Is(err, tt.want) {
				t.Fatalf("StoreConnsInSystemd = %d, %v; want 1 and %v", n, err, tt.want)
			}
			if msg, _ := r.next(); msg != "FDSTORE=1\nFDNAME=conn-good\nFDPOLL=0" {
				t.Errorf("systemd got %q", msg)
			}
			_, entries, err := readConnState(metaPath)
			if err != nil || len(entries) != 1 || entries[0].name != "good" {
				t.Errorf("state file: %v, %v; want good alone", entries, err)
			}
		})
	}

	t.Run("no notify socket", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		metaPath := filepath.Join(t.TempDir(), "conns")
		if n, err := New(nil).StoreConnsInSystemd(metaPath, []HeldConn{good}); n != 0 || !errors.Is(err, ErrNoNotifySocket) {
			t.Errorf("StoreConnsInSystemd = %d, %v; want ErrNoNotifySocket", n, err)
		}
		if _, err := os.Stat(metaPath); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("state file written without systemd: %v", err)
		}
	})
	t.Run("systemd gone", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
		metaPath := filepath.Join(t.TempDir(), "conns")
		if n, err := New(nil).StoreConnsInSystemd(metaPath, []HeldConn{good}); n != 0 || err == nil {
			t.Errorf("StoreConnsInSystemd = %d, %v; want 0 and an error", n, err)
		}
		if _, err := os.Stat(metaPath); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("state file written though nothing was stored: %v", err)
		}
	})
	t.Run("state not written", func(t *testing.T) {
		r, _ := fakeSystemd(t)
		notDir := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(notDir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		n, err := New(nil).StoreConnsInSystemd(filepath.Join(notDir, "conns"), []HeldConn{good})
		if n != 0 || err == nil {
			t.Fatalf("StoreConnsInSystemd = %d, %v; want 0 and an error", n, err)
		}
		r.next() // stored
		if msg, _ := r.next(); msg != "FDSTOREREMOVE=1\nFDNAME=conn-good" {
			t.Errorf("a connection stored without its state was not removed: %q", msg)
		}
	})
}

// withCRC returns b, a state file without its checksum, with a valid one.
func withCRC(b []byte) []byte {
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// TestTakeConnsStateProblems: a connection systemd passed whose state is
// missing, damaged, too old or another's is reset and logged, and the
// state file is removed; nothing panics.
func TestTakeConnsStateProblems(t *testing.T) {
	now := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	good := encodeConnState(now, []HeldConn{{Name: "ab", Meta: []byte("meta")}})
	flipped := bytes.Clone(good)
	flipped[len(connStateMagic)+14] ^= 0x40 // in the entry's name
	oversize := binary.BigEndian.AppendUint64([]byte(connStateMagic), uint64(now.UnixNano()))
	oversize = binary.BigEndian.AppendUint32(oversize, 1)
	oversize = binary.BigEndian.AppendUint16(append(oversize, 2, 'a', 'b'), MaxConnMeta+1)
	oversize = withCRC(append(oversize, make([]byte, MaxConnMeta+1)...))
	tests := []struct {
		name    string
		fdName  string
		state   []byte // nil: no file
		wantLog string
	}{
		{"no state file", "conn-ab", nil, "held connections have no state file"},
		{"damaged", "conn-ab", flipped, "checksum"},
		{"cut short", "conn-ab", good[:len(good)-7], "checksum"},
		{"empty", "conn-ab", []byte{}, "not a connection state file"},
		{"another format", "conn-ab", []byte("meshwork-conns/2\nwhatever"), "format version"},
		{"not ours", "conn-ab", []byte(`{"nodes":[]}`), "not a connection state file"},
		{"oversize meta", "conn-ab", oversize, "meta length 4097"},
		{"too old", "conn-ab", encodeConnState(now.Add(-11*time.Minute), []HeldConn{{Name: "ab"}}), "too old"},
		{"from the future", "conn-ab", encodeConnState(now.Add(2*time.Minute), []HeldConn{{Name: "ab"}}), "dated in the future"},
		{"another connection's", "conn-ab", encodeConnState(now, []HeldConn{{Name: "cd"}}), "held connections have no state; reset"},
		{"bad name", "conn-a.b", good, "invalid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := fakeSystemd(t)
			metaPath := filepath.Join(t.TempDir(), "conns")
			if tt.state != nil {
				if err := os.WriteFile(metaPath, tt.state, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			logger, logs := testLogger()
			s := New(logger)
			s.clock = clock.NewManual(now)
			peer, file := tcpPair(t)
			s.add(tt.fdName, file, "systemd")
			conns, err := s.TakeConns(context.Background(), metaPath)
			if err != nil || len(conns) != 0 {
				t.Fatalf("TakeConns = %v, %v; want nothing", conns, err)
			}
			if msg, _ := r.next(); msg != "FDSTOREREMOVE=1\nFDNAME="+tt.fdName {
				t.Errorf("systemd got %q, want the removal of %s", msg, tt.fdName)
			}
			assertReset(t, "connection without state", peer)
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("the log does not say %q:\n%s", tt.wantLog, logs)
			}
			if _, err := os.Stat(metaPath); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("state file left: %v", err)
			}
		})
	}
}

// TestHeldConnsAreNotListeners: "conn-*" sockets systemd passed are never
// listeners: not inherited, not waited for, not released, not handed on,
// not stored or removed by the listeners' store logic; and no listener may
// take the prefix.
func TestHeldConnsAreNotListeners(t *testing.T) {
	r, addr := fakeSystemd(t)
	s := New(nil)
	api, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	inject(t, s, "api", api.(fileSocket))
	s.fromSystemd = true
	s.stored["api"] = nil
	_, held := tcpPair(t)
	dup, err := dupFile(held)
	if err != nil {
		t.Fatal(err)
	}
	s.add("conn-ab", dup, "systemd")

	if got := s.Inherited(); len(got) != 1 || got[0] != "api" {
		t.Errorf("Inherited() = %v, want [api]", got)
	}
	files, err := s.Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, nf := range files {
		if nf.Name != "api" {
			t.Errorf("Files() hands on %s", nf.Name)
		}
		nf.File.Close()
	}
	if got := s.ReleaseUnclaimed(); len(got) != 1 || got[0] != "api" {
		t.Errorf("ReleaseUnclaimed() = %v, want [api]", got)
	}
	select {
	case <-s.AllClaimed():
	default:
		t.Error("AllClaimed waits for a held connection")
	}
	if err := s.StoreInSystemd(); err != nil {
		t.Fatal(err)
	}
	if msg, _ := r.next(); msg != "FDSTOREREMOVE=1\nFDNAME=api" {
		t.Errorf("StoreInSystemd sent %q, want the removal of api alone", msg)
	}
	if err := sendNotify(addr, "MARK=1", -1); err != nil {
		t.Fatal(err)
	}
	if msg, _ := r.next(); msg != "MARK=1" {
		t.Errorf("StoreInSystemd sent %q about a held connection", msg)
	}
	if _, err := s.Listener("conn-x", "tcp", "127.0.0.1:0"); !errors.Is(err, ErrBadName) {
		t.Errorf("Listener named conn-x: %v, want ErrBadName", err)
	}
	if _, err := s.PacketConn("conn-x", "udp", "127.0.0.1:0"); !errors.Is(err, ErrBadName) {
		t.Errorf("PacketConn named conn-x: %v, want ErrBadName", err)
	}
	// A held connection that came as a predecessor's listener is reset.
	peer, f := tcpPair(t)
	s.add("conn-cd", f, "handoff")
	assertReset(t, "held connection among the listeners", peer)
}

// helperSystemdConns is started as systemd would start the agent with
// the store holding "api", "conn-ab12" and "conn-orphan", and the state
// file HELPER_STATE naming "ab12" and "gone". It reports what it took and
// talks once on each connection.
func helperSystemdConns() int {
	s, err := Inherit(nil)
	if err != nil {
		fmt.Println("inherit error:", err)
		return 0
	}
	fmt.Printf("inherited %s\n", strings.Join(s.Inherited(), ","))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conns, err := s.TakeConns(ctx, os.Getenv("HELPER_STATE"))
	var names []string
	for _, c := range conns {
		names = append(names, c.Name+"="+string(c.Meta))
	}
	fmt.Printf("conns %s %v\n", strings.Join(names, ","), err)
	greetTaken(conns, false)
	return 0
}

// TestInheritConnsFromSystemd passes a listener and two held connections
// with real LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID: the helper counts
// only the listener as inherited, takes the connection that has state,
// resets the one without, and removes both from the store.
func TestInheritConnsFromSystemd(t *testing.T) {
	r, _ := fakeSystemd(t)
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	peer, held := tcpPair(t)
	orphanPeer, orphan := tcpPair(t)
	state := filepath.Join(t.TempDir(), "conns")
	if err := os.WriteFile(state, encodeConnState(time.Now(), []HeldConn{{Name: "ab12", Meta: []byte("m1")}, {Name: "gone"}}), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=systemd-conns", "HELPER_STATE="+state,
		"LISTEN_FDS=3", "LISTEN_FDNAMES=api:conn-ab12:conn-orphan")
	cmd.ExtraFiles = []*os.File{lf, held, orphan}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	held.Close() // the helper's copies are the last
	orphan.Close()
	out := bufio.NewReader(stdout)

	if got := nextLine(t, out); got != "inherited api" {
		t.Errorf("helper: %q, want the listener alone", got)
	}
	if got := nextLine(t, out); got != "conns ab12=m1 <nil>" {
		t.Fatalf("helper: %q, want ab12 with its meta", got)
	}
	for _, want := range []string{"FDSTOREREMOVE=1\nFDNAME=conn-ab12", "FDSTOREREMOVE=1\nFDNAME=conn-orphan"} {
		if msg, _ := r.next(); msg != want {
			t.Errorf("systemd got %q, want %q", msg, want)
		}
	}
	assertReset(t, "connection without state", orphanPeer)
	if got := readLine(t, peer); got != "successor ab12" {
		t.Errorf("peer read %q", got)
	}
	fmt.Fprintf(peer, "peer ab12\n")
	if got, want := nextLine(t, out), fmt.Sprintf("read %q <nil>", "peer ab12"); got != want {
		t.Errorf("helper: %s, want %s", got, want)
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state file left: %v", err)
	}
}

func FuzzDecodeConnState(f *testing.F) {
	now := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	f.Add(encodeConnState(now, nil))
	f.Add(encodeConnState(now, []HeldConn{{Name: "a1", Meta: []byte("meta")}, {Name: "B-_9"}}))
	f.Add(encodeConnState(now, []HeldConn{{Name: strings.Repeat("f", 64), Meta: make([]byte, MaxConnMeta)}}))
	f.Add([]byte("meshwork-conns/2\n"))
	f.Add([]byte(connStateMagic + "\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		written, entries, err := decodeConnState(b)
		if err != nil {
			if !errors.Is(err, ErrBadConnState) {
				t.Fatalf("error %v does not wrap ErrBadConnState", err)
			}
			return
		}
		conns := make([]HeldConn, len(entries))
		for i, e := range entries {
			if checkConnName(e.name) != nil || len(e.meta) > MaxConnMeta {
				t.Fatalf("accepted entry %q with %d bytes of meta", e.name, len(e.meta))
			}
			conns[i] = HeldConn{Name: e.name, Meta: e.meta}
		}
		if again := encodeConnState(written, conns); !bytes.Equal(again, b) {
			t.Fatalf("decoded and encoded again differs:\n%q\n%q", b, again)
		}
	})
}

func FuzzDecodeConnMessage(f *testing.F) {
	f.Add(appendConnEntry(nil, "a1", []byte("meta")))
	f.Add(appendConnEntry(nil, strings.Repeat("z", 64), make([]byte, MaxConnMeta)))
	f.Add([]byte{0})
	f.Add([]byte{1, 'a', 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		name, meta, err := decodeConnMessage(body)
		if err != nil {
			if !errors.Is(err, ErrBadConnState) {
				t.Fatalf("error %v does not wrap ErrBadConnState", err)
			}
			return
		}
		if checkConnName(name) != nil || len(meta) > MaxConnMeta {
			t.Fatalf("accepted %q with %d bytes of meta", name, len(meta))
		}
		if again := appendConnEntry(nil, name, meta); !bytes.Equal(again, body) {
			t.Fatalf("decoded and encoded again differs: %q, %q", body, again)
		}
	})
}

// greetTaken speaks on each taken connection as a successor would: it
// prints its name and meta first when announce is set, writes a line,
// prints the peer's answer, and closes it.
func greetTaken(conns []HeldConn, announce bool) {
	for _, c := range conns {
		if announce {
			fmt.Printf("conn %s %s\n", c.Name, c.Meta)
		}
		nc, err := net.FileConn(c.File)
		c.File.Close()
		if err != nil {
			fmt.Println("fileconn error:", err)
			continue
		}
		fmt.Fprintf(nc, "successor %s\n", c.Name)
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(nc).ReadString('\n')
		fmt.Printf("read %q %v\n", strings.TrimSpace(line), err)
		nc.Close()
	}
}
