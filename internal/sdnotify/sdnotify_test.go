package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen opens a real unixgram socket, as systemd does, and points
// $NOTIFY_SOCKET at it. It returns the socket to read notifications from.
func listen(t *testing.T, abstract bool) *net.UnixConn {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	if abstract {
		name = fmt.Sprintf("@meshwork-sdnotify-test-%d-%d", time.Now().UnixNano(), len(t.Name()))
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv(SocketEnv, name)
	return conn
}

// receive reads one notification, failing the test if none arrives before
// the deadline.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification received: %v", err)
	}
	return string(buf[:n])
}

func TestNotifications(t *testing.T) {
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", Ready, "READY=1\n"},
		{"stopping", Stopping, "STOPPING=1\n"},
		{"watchdog", Watchdog, "WATCHDOG=1\n"},
		{"status", func() error { return Status("gossip: 3 members") }, "STATUS=gossip: 3 members\n"},
		{"status newline flattened", func() error { return Status("a\nb") }, "STATUS=a b\n"},
		{"extend timeout", func() error { return ExtendTimeout(25*time.Second + 3*time.Millisecond) }, "EXTEND_TIMEOUT_USEC=25003000\n"},
		{"main pid", func() error { return MainPID(4242) }, "MAINPID=4242\n"},
		{"several assignments", func() error { return Send("READY=1", "STATUS=up") }, "READY=1\nSTATUS=up\n"},
	}
	for _, sock := range []struct {
		name     string
		abstract bool
	}{{"path", false}, {"abstract", true}} {
		for _, tt := range tests {
			t.Run(sock.name+"/"+tt.name, func(t *testing.T) {
				conn := listen(t, sock.abstract)
				if err := tt.send(); err != nil {
					t.Fatalf("send: %v", err)
				}
				if got := receive(t, conn); got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			})
		}
	}
}

func TestMainPIDRefusesNonPositive(t *testing.T) {
	listen(t, false)
	for _, pid := range []int{0, -1} {
		if err := MainPID(pid); err == nil || !strings.Contains(err.Error(), "not a process ID") {
			t.Errorf("MainPID(%d) = %v, want an error naming the bad PID", pid, err)
		}
	}
}

func TestExtendTimeoutRefusesNonPositive(t *testing.T) {
	conn := listen(t, false)
	for _, d := range []time.Duration{0, -time.Second, time.Nanosecond} {
		if err := ExtendTimeout(d); err == nil || !strings.Contains(err.Error(), "positive") {
			t.Errorf("ExtendTimeout(%v) = %v, want an error naming the bad duration", d, err)
		}
	}
	// Nothing was sent: zero would tell systemd to time out at once.
	if err := conn.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Errorf("a refused extension still sent %d bytes", n)
	}
}

func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

func TestReloadingCarriesMonotonicTime(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			conn := listen(t, abstract)
			before := monotonicNow(t)
			if err := Reloading(); err != nil {
				t.Fatalf("reloading: %v", err)
			}
			after := monotonicNow(t)
			lines := strings.Split(strings.TrimSuffix(receive(t, conn), "\n"), "\n")
			if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
				t.Fatalf("got %q, want RELOADING=1 then MONOTONIC_USEC=<n>", lines)
			}
			usec, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
			if err != nil {
				t.Fatalf("MONOTONIC_USEC: %v", err)
			}
			// systemd compares the value with its own CLOCK_MONOTONIC reading
			// of when it sent SIGHUP, so it must be that clock, not wall time.
			if usec < before || usec > after {
				t.Errorf("MONOTONIC_USEC=%d outside CLOCK_MONOTONIC window [%d, %d]", usec, before, after)
			}
		})
	}
}

func TestNoSocketIsNoOp(t *testing.T) {
	t.Setenv(SocketEnv, "")
	for name, f := range map[string]func() error{"ready": Ready, "stopping": Stopping, "reloading": Reloading, "watchdog": Watchdog} {
		if err := f(); err != nil {
			t.Errorf("%s without %s: %v, want nil", name, SocketEnv, err)
		}
	}
}

func TestSocketErrors(t *testing.T) {
	tests := []struct {
		name, socket string
		wantBad      bool
	}{
		{"relative path", "run/notify", true},
		{"missing socket", filepath.Join(t.TempDir(), "absent.sock"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(SocketEnv, tt.socket)
			err := Ready()
			if err == nil {
				t.Fatalf("Ready with %s=%q: nil error", SocketEnv, tt.socket)
			}
			if got := errors.Is(err, ErrBadSocket); got != tt.wantBad {
				t.Errorf("errors.Is(%v, ErrBadSocket) = %v, want %v", err, got, tt.wantBad)
			}
			if !strings.Contains(err.Error(), tt.socket) {
				t.Errorf("error %q does not name the socket %q", err, tt.socket)
			}
		})
	}
}

// TestWatchdogInterval reads WatchdogSec= as systemd passes it: for this
// process only, and malformed values refused.
func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name, usec, pid string
		want            time.Duration
		wantErr         bool
	}{
		{"off", "", "", 0, false},
		{"on, no pid", "30000000", "", 30 * time.Second, false},
		{"on, this process", "4000000", self, 4 * time.Second, false},
		{"on, another process", "4000000", strconv.Itoa(os.Getpid() + 1), 0, false},
		{"not a number", "30s", "", 0, true},
		{"zero", "0", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			got, err := WatchdogInterval()
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
