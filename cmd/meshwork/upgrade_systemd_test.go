package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifyFrom is one sd_notify datagram and the PID of its sender.
type notifyFrom struct {
	pid int
	msg string
}

// credNotifySocket listens as systemd does, with SO_PASSCRED, so that each
// message comes with its sender's PID: systemd's NotifyAccess=main judges
// messages by it.
func credNotifySocket(t *testing.T) (string, <-chan notifyFrom) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	ch := make(chan notifyFrom, 256)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		oob := make([]byte, 1024)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			m := notifyFrom{msg: string(buf[:n])}
			cmsgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
			for _, c := range cmsgs {
				if fds, err := syscall.ParseUnixRights(&c); err == nil {
					for _, fd := range fds {
						syscall.Close(fd) // FDSTORE=1's socket: not kept
					}
				}
				if cred, err := syscall.ParseUnixCredentials(&c); err == nil {
					m.pid = int(cred.Pid)
				}
			}
			select {
			case ch <- m:
			default: // the test reads what it needs; the rest may drop
			}
		}
	}()
	return path, ch
}

// TestAgentUpgradeUnderSystemdProcess upgrades `meshwork agent` with
// SIGUSR2 under a fake systemd that, like systemd, sees each message's
// sender. The old agent names its successor with MAINPID= once the
// successor serves; the successor sends READY=1, WATCHDOG=1 and FDSTORE=1
// only after that (systemd would refuse them from a process that is not
// the main one), and the old agent exits with status 0.
func TestAgentUpgradeUnderSystemdProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := meshworkBinary(t)
	ip := loopbackAddr()
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.yaml")
	writeConf(t, conf, fmt.Sprintf(
		"dev: true\nnode: proc\nbind: %s\naddresses: {http: %s, dns: %s}\ntunnel: {vip_range: 127.249.0.0/16}\n", ip, ip, ip))
	sock, notes := credNotifySocket(t)

	// A file, not a pipe: the successor inherits it, and would hold a pipe
	// open, and cmd.Wait with it, after the old agent exited.
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "agent", "--config", conf, "--data-dir", filepath.Join(dir, "data"))
	// WATCHDOG_PID as systemd sets it: the successor must not inherit it.
	cmd.Env = append(withoutNotifySocket(os.Environ()), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=2000000")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	oldPID := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var succPID int
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if succPID > 0 {
			_ = syscall.Kill(succPID, syscall.SIGKILL)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log:\n%s", b)
		}
	})

	next := func(what string, ok func(notifyFrom) bool) notifyFrom {
		t.Helper()
		timeout := time.After(time.Minute)
		for {
			select {
			case m, open := <-notes:
				if !open {
					t.Fatalf("notify socket closed before %s", what)
				}
				if ok(m) {
					return m
				}
				if m.pid != oldPID && !strings.HasPrefix(m.msg, "MAINPID=") {
					t.Errorf("before %s, a message from pid %d (not the main process %d): %q", what, m.pid, oldPID, m.msg)
				}
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		}
	}
	next("READY=1 from the agent", func(m notifyFrom) bool { return m.pid == oldPID && strings.Contains(m.msg, "READY=1") })
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	m := next("MAINPID= from the old agent", func(m notifyFrom) bool { return strings.HasPrefix(m.msg, "MAINPID=") })
	if m.pid != oldPID {
		t.Errorf("MAINPID= sent by pid %d, want the main process %d", m.pid, oldPID)
	}
	succPID, err = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(m.msg, "MAINPID=")))
	if err != nil || succPID == oldPID || succPID <= 0 {
		t.Fatalf("MAINPID message %q: %v", m.msg, err)
	}
	// From here systemd takes messages from the successor alone.
	oldPID = succPID
	var ready, ping, stored bool
	deadline := time.After(time.Minute)
	for !ready || !ping || !stored {
		select {
		case m, open := <-notes:
			if !open {
				t.Fatal("notify socket closed")
			}
			if m.pid != succPID {
				if strings.Contains(m.msg, "WATCHDOG=1") || strings.Contains(m.msg, "READY=1") || strings.Contains(m.msg, "FDSTORE=1") {
					t.Errorf("after MAINPID=%d, pid %d sent %q: systemd would refuse it", succPID, m.pid, m.msg)
				}
				continue
			}
			ready = ready || strings.Contains(m.msg, "READY=1")
			ping = ping || strings.Contains(m.msg, "WATCHDOG=1")
			stored = stored || strings.Contains(m.msg, "FDSTORE=1")
		case <-deadline:
			t.Fatalf("from the successor %d: READY=1 %v, WATCHDOG=1 %v, FDSTORE=1 %v", succPID, ready, ping, stored)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("old agent: %v, want exit status 0", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the old agent did not exit after the handover")
	}
	if err := syscall.Kill(succPID, syscall.SIGTERM); err != nil {
		t.Errorf("successor %d: %v", succPID, err)
	}
}
