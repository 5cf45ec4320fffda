package sockets

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the helper process of the tests that need a
// real exec: with helperEnv set, TestMain runs the named helper instead of
// the tests.
const helperEnv = "SOCKETS_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "successor":
		os.Exit(helperSuccessor())
	case "systemd":
		os.Exit(helperSystemd())
	case "conns":
		os.Exit(helperConns())
	case "systemd-conns":
		os.Exit(helperSystemdConns())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperSuccessor inherits the "api" listener of HELPER_ADDR, says it is
// ready, then answers HELPER_CONNS connections with "successor". It exits
// with 3 when its predecessor does not let it start.
func helperSuccessor() int {
	s, err := Inherit(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if !s.IsSuccessor() {
		fmt.Fprintln(os.Stderr, "not started by a handoff")
		return 1
	}
	if err := s.AwaitStart(context.Background()); err != nil {
		return 3
	}
	ln, err := s.Listener("api", "tcp", os.Getenv("HELPER_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.SignalReady(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The predecessor's WATCHDOG_PID names the predecessor: a successor
	// that kept it would never ping systemd's watchdog.
	if pid, ok := os.LookupEnv("WATCHDOG_PID"); ok {
		fmt.Fprintln(os.Stderr, "inherited WATCHDOG_PID", pid)
		return 5
	}
	// Answer only once the predecessor handed over: its answers are
	// "predecessor" until then.
	if err := s.AwaitHandover(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	var n int
	fmt.Sscan(os.Getenv("HELPER_CONNS"), &n)
	for range n {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(c, "successor\n")
		c.Close()
	}
	return 0
}

// helperSystemd takes the sockets systemd would hand over, "api" (TCP) and
// "dns-udp", at HELPER_TCP and HELPER_UDP, and reports on stdout what it got,
// then answers one TCP connection and one datagram.
func helperSystemd() int {
	s, err := Inherit(nil)
	if err != nil {
		fmt.Println("inherit error:", err)
		return 0
	}
	fmt.Printf("inherited %s\n", strings.Join(s.Inherited(), ","))
	fmt.Printf("env %q\n", os.Getenv("LISTEN_FDS")+os.Getenv("LISTEN_PID")+os.Getenv("LISTEN_FDNAMES"))
	ln, err := s.Listener("api", "tcp", os.Getenv("HELPER_TCP"))
	if err != nil {
		fmt.Println("api error:", err)
		return 0
	}
	pc, err := s.PacketConn("dns-udp", "udp", os.Getenv("HELPER_UDP"))
	if err != nil {
		fmt.Println("dns-udp error:", err)
		return 0
	}
	fmt.Println("serving")
	c, err := ln.Accept()
	if err == nil {
		fmt.Fprintf(c, "tcp ok\n")
		c.Close()
	}
	buf := make([]byte, 64)
	n, from, err := pc.ReadFrom(buf)
	if err == nil {
		pc.WriteTo(append([]byte("udp ok "), buf[:n]...), from)
	}
	return 0
}

// helperCmd is the test binary run as helper name.
func helperCmd(t *testing.T, name string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// readLine reads one line from c, bounded so that a broken handoff fails the
// test instead of hanging it.
func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", c.RemoteAddr(), err)
	}
	return strings.TrimSpace(line)
}

// TestHandoffAcrossReexec hands a listener to a real new process. A
// connection made before the successor exists, while nothing accepts, waits
// in the kernel's backlog and is answered by the successor; so is one made
// after the predecessor closed its listener.
func TestHandoffAcrossReexec(t *testing.T) {
	s := New(nil)
	ln, err := s.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()

	// Nothing accepts on ln: this connection waits in the backlog.
	early, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()

	// WATCHDOG_PID as systemd sets it for the predecessor, the main
	// process: the successor must not inherit it.
	cmd := helperCmd(t, "successor", "HELPER_ADDR="+addr, "HELPER_CONNS=2", "WATCHDOG_PID=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	succ, err := s.StartSuccessor(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(succ.Abort)
	// Handing the descriptor to exec must not have made this process's
	// socket blocking (the successor, which has not taken it yet, would
	// make it non-blocking again): a blocked accept or read would keep
	// Close from returning.
	assertNonblocking(t, ln.(syscall.Conn))
	if err := succ.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := succ.Handover(); err != nil {
		t.Fatal(err)
	}

	// The predecessor stops: the socket stays open in the successor.
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	late, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial after the predecessor closed its listener: %v", err)
	}
	defer late.Close()

	if got := readLine(t, early); got != "successor" {
		t.Errorf("connection from the backlog answered %q, want successor", got)
	}
	if got := readLine(t, late); got != "successor" {
		t.Errorf("connection after the handoff answered %q, want successor", got)
	}
	if err := succ.Wait(); err != nil {
		t.Errorf("successor: %v", err)
	}
}

// TestSuccessorNotHandedOver: a successor whose predecessor exits after
// it is ready but without handing over (under systemd: without naming it
// the main process) learns so, and does not act as the main process.
func TestSuccessorNotHandedOver(t *testing.T) {
	s := New(nil)
	ln, err := s.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := helperCmd(t, "successor", "HELPER_ADDR="+ln.Addr().String(), "HELPER_CONNS=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	succ, err := s.StartSuccessor(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(succ.Abort)
	if err := succ.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait closes the pipe without the handover message.
	var ee *exec.ExitError
	if err := succ.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Errorf("successor without a handover: %v, want exit status 4 (AwaitHandover failed)", err)
	}
}

// TestSuccessorNotLetStart: a successor whose predecessor goes away before
// Start exits without serving.
func TestSuccessorNotLetStart(t *testing.T) {
	s := New(nil)
	ln, err := s.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := helperCmd(t, "successor", "HELPER_ADDR="+ln.Addr().String(), "HELPER_CONNS=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	succ, err := s.StartSuccessor(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(succ.Abort)
	var exit *exec.ExitError
	if err := succ.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("successor = %v, want exit status 3", err)
	}
}

// TestStartSuccessorThatExits: a successor that exits before it is ready is
// reported, and the predecessor keeps its socket.
func TestStartSuccessorThatExits(t *testing.T) {
	s := New(nil)
	ln, err := s.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := helperCmd(t, "no-such-helper")
	cmd.Stderr = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = s.StartSuccessor(ctx, cmd)
	if !errors.Is(err, ErrSuccessorFailed) {
		t.Fatalf("StartSuccessor = %v, want ErrSuccessorFailed", err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("predecessor's socket after a failed handoff: %v", err)
	}
	c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatalf("predecessor cannot accept after a failed handoff: %v", err)
	}
	a.Close()
}

// systemdSockets opens a TCP listener and a UDP socket on loopback, which a
// test hands to a helper as systemd would.
func systemdSockets(t *testing.T) (*net.TCPListener, *net.UDPConn, []*os.File) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	lf, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := pc.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close(); pf.Close() })
	return ln, pc, []*os.File{lf, pf}
}

// systemdHelper runs the "systemd" helper with the sockets as descriptors 3
// and 4 and LISTEN_PID set to its own pid by a shell that then execs it, as
// systemd does, or to listenPID when it is not "".
func systemdHelper(t *testing.T, ln *net.TCPListener, pc *net.UDPConn, files []*os.File, listenPID string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	pid := "$$"
	if listenPID != "" {
		pid = listenPID
	}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=`+pid+` exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=systemd",
		"LISTEN_FDS=2", "LISTEN_FDNAMES=api:dns-udp",
		"HELPER_TCP="+ln.Addr().String(), "HELPER_UDP="+pc.LocalAddr().String())
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewReader(out)
}

func nextLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("helper output: %v", err)
	}
	return strings.TrimSpace(line)
}

// TestInheritFromSystemd passes real descriptors with LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID. The helper can only serve on the two
// addresses by inheriting, since this process still holds the sockets
// (a new bind would fail with EADDRINUSE).
func TestInheritFromSystemd(t *testing.T) {
	ln, pc, files := systemdSockets(t)
	_, out := systemdHelper(t, ln, pc, files, "")
	if got := nextLine(t, out); got != "inherited api,dns-udp" {
		t.Fatalf("helper: %q, want the two named sockets", got)
	}
	if got := nextLine(t, out); got != `env ""` {
		t.Errorf("helper still has LISTEN_* in its environment: %s", got)
	}
	if got := nextLine(t, out); got != "serving" {
		t.Fatalf("helper: %q", got)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := readLine(t, c); got != "tcp ok" {
		t.Errorf("tcp: %q", got)
	}
	u, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// This process holds the UDP socket too but does not read it, so the
	// helper gets the datagram.
	if _, err := u.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = u.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := u.Read(buf)
	if err != nil {
		t.Fatalf("udp answer: %v", err)
	}
	if got := string(buf[:n]); got != "udp ok ping" {
		t.Errorf("udp: %q", got)
	}
}

// TestInheritIgnoresAnotherProcesssFDs: with LISTEN_PID naming another
// process, the descriptors are not this process's to take.
func TestInheritIgnoresAnotherProcesssFDs(t *testing.T) {
	ln, pc, files := systemdSockets(t)
	_, out := systemdHelper(t, ln, pc, files, "1")
	if got := nextLine(t, out); got != "inherited" {
		t.Fatalf("helper: %q, want nothing inherited", got)
	}
	nextLine(t, out) // env
	if got := nextLine(t, out); !strings.HasPrefix(got, "api error:") || !strings.Contains(got, "address already in use") {
		t.Errorf("helper: %q, want a failed bind of the address this process holds", got)
	}
}

// inject hands f to s as if a predecessor had.
func inject(t *testing.T, s *Set, name string, sock fileSocket) {
	t.Helper()
	f, err := sock.File()
	if err != nil {
		t.Fatal(err)
	}
	s.add(name, f, "test")
}

func TestListenerReusesOnlyTheSameAddress(t *testing.T) {
	old, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := old.Addr().(*net.TCPAddr).Port
	s := New(nil)
	inject(t, s, "api", old.(*net.TCPListener))
	inject(t, s, "vip-127.0.0.1_1", old.(*net.TCPListener))
	old.Close() // s holds the only descriptors now

	ln, err := s.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := ln.Addr().(*net.TCPAddr).Port; got != port {
		t.Errorf("port 0 asked: got a new socket on %d, want the inherited one on %d", got, port)
	}
	if _, ok := ln.(*net.TCPListener); !ok {
		t.Errorf("inherited listener is %T, want *net.TCPListener", ln)
	}
	if got := s.Inherited(); len(got) != 1 || got[0] != "vip-127.0.0.1_1" {
		t.Errorf("Inherited() = %v after claiming api", got)
	}
	all := s.AllClaimed()
	select {
	case <-all:
		t.Error("AllClaimed closed with a socket left to claim")
	default:
	}
	if got := s.ReleaseUnclaimed(); len(got) != 1 {
		t.Errorf("ReleaseUnclaimed() = %v", got)
	}
	select {
	case <-all:
	default:
		t.Error("AllClaimed still open after ReleaseUnclaimed")
	}

	// Elsewhere: the inherited socket is closed and a new one opened.
	s2 := New(nil)
	inject(t, s2, "api", ln.(*net.TCPListener))
	other, err := s2.Listener("api", "tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if ip := other.Addr().(*net.TCPAddr).IP.String(); ip != "127.0.0.2" {
		t.Errorf("asked 127.0.0.2, got %s", other.Addr())
	}

	// A listener under a datagram socket's name: a new one.
	s3 := New(nil)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	inject(t, s3, "api", udp)
	ln3, err := s3.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln3.Close()
}

func TestSameAddr(t *testing.T) {
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	udp := func(s string) net.Addr { a, _ := net.ResolveUDPAddr("udp", s); return a }
	tests := []struct {
		name, network, want string
		got                 net.Addr
		same                bool
	}{
		{"same", "tcp", "127.0.0.1:80", tcp("127.0.0.1:80"), true},
		{"any port", "tcp", "127.0.0.1:0", tcp("127.0.0.1:80"), true},
		{"other port", "tcp", "127.0.0.1:81", tcp("127.0.0.1:80"), false},
		{"other ip", "tcp", "127.0.0.2:80", tcp("127.0.0.1:80"), false},
		{"wildcard v4 on dual stack", "tcp", "0.0.0.0:80", tcp("[::]:80"), true},
		{"empty host", "tcp", ":80", tcp("0.0.0.0:80"), true},
		{"wildcard vs specific", "tcp", "0.0.0.0:80", tcp("127.0.0.1:80"), false},
		{"tcp asked, udp got", "tcp", "127.0.0.1:80", udp("127.0.0.1:80"), false},
		{"udp", "udp", "127.0.0.1:53", udp("127.0.0.1:53"), true},
		{"v6", "tcp", "[::1]:80", tcp("[::1]:80"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameAddr(tt.network, tt.want, tt.got); got != tt.same {
				t.Errorf("sameAddr(%s, %s, %s) = %v, want %v", tt.network, tt.want, tt.got, got, tt.same)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, name := range []string{"api", "dns-udp", ListenerName("127.0.0.1:80"), ListenerName("[::1]:80")} {
		if err := checkName(name); err != nil {
			t.Errorf("checkName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"", "vip:1.2.3.4:80", "a b", "é", strings.Repeat("a", 256)} {
		if err := checkName(name); !errors.Is(err, ErrBadName) {
			t.Errorf("checkName(%q) = %v, want ErrBadName", name, err)
		}
	}
	if _, err := New(nil).Listener("vip:1.2.3.4:80", "tcp", "127.0.0.1:0"); !errors.Is(err, ErrBadName) {
		t.Errorf("Listener with a ':' in its name: %v", err)
	}
}

// TestFilesLeavesOutClosedSockets: a VIP closed since it was opened is not
// handed on.
func TestFilesLeavesOutClosedSockets(t *testing.T) {
	s := New(nil)
	api, err := s.Listener("api", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	vip, err := s.Listener(ListenerName("127.0.0.1:0"), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dns, err := s.PacketConn("dns-udp", "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	vip.Close()
	files, err := s.Files()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		rc, err := f.File.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var sa syscall.Sockaddr
		var serr error
		_ = rc.Control(func(fd uintptr) { sa, serr = syscall.Getsockname(int(fd)) })
		if serr != nil || sa == nil {
			t.Errorf("%s: not a socket: %v", f.Name, serr)
		}
		f.File.Close()
	}
	if got := strings.Join(names, ","); got != "api,dns-udp" {
		t.Errorf("Files() = %s, want api,dns-udp", got)
	}
}

// assertNonblocking fails the test unless the socket's open file
// description has O_NONBLOCK, which Go's poller needs.
func assertNonblocking(t *testing.T, c syscall.Conn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		flags = int(r)
		if errno != 0 {
			ferr = errno
		}
	}); err != nil || ferr != nil {
		t.Fatalf("fcntl: %v %v", err, ferr)
	}
	if flags&syscall.O_NONBLOCK == 0 {
		t.Error("the socket lost O_NONBLOCK")
	}
}

// TestListenerBacklog: a listener the Set hands out queues as many pending
// connections as the kernel allows (net.core.somaxconn), also one inherited
// from a process that asked for fewer, and whatever Go found in /proc/sys
// (the unit's ProcSubset=pid hides it, and Go then asks for 128).
func TestListenerBacklog(t *testing.T) {
	somaxconn := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		fmt.Sscan(string(b), &somaxconn)
	}
	want := min(somaxconn, listenBacklog)

	// A socket listening with a backlog of 16, as a predecessor left it.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	s := New(nil)
	s.add("api", os.NewFile(uintptr(fd), "api"), "handoff")
	if got := backlogOf(t, fd); got != 16 {
		t.Fatalf("the inherited socket's backlog is %d before the Set takes it, want 16", got)
	}

	inherited, err := s.Listener("api", "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer inherited.Close()
	fresh, err := s.Listener("vip-127.0.0.1_0", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for name, ln := range map[string]net.Listener{"inherited": inherited, "new": fresh} {
		rc, err := ln.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := rc.Control(func(fd uintptr) { got = backlogOf(t, int(fd)) }); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s listener: backlog %d, want %d", name, got, want)
		}
	}
}

// backlogOf reads a listening socket's backlog: for a socket in LISTEN,
// TCP_INFO's tcpi_sacked holds it.
func backlogOf(t *testing.T, fd int) int {
	t.Helper()
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatalf("TCP_INFO: %v", err)
	}
	return int(info.Sacked)
}
