//go:build e2e

// Package netns runs the real meshwork binary on several hosts made of Linux
// network namespaces on this machine. Each host has one veth link to a shared
// bridge, which lives in a namespace of its own so that nothing touches the
// machine's own network. Hosts get addresses in 198.18.0.0/15, the range set
// aside for benchmarking. A link is cut by taking its veth down.
//
// Everything a test creates is removed in t.Cleanup, also when it fails.
// Needs root.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Net is a set of hosts on one private bridge.
type Net struct {
	t        testing.TB
	prefix   string // unique per Net, so concurrent tests do not collide
	bridgeNS string
	subnet   int // third octet of 198.18.<subnet>.0/24
	Hosts    []*Host
}

// Host is one network namespace with one address.
type Host struct {
	net  *Net
	Name string // short name, e.g. "h1"
	NS   string // namespace name
	Addr string // IPv4 address in 198.18.0.0/15
	veth string // the bridge-side end of its link, in the bridge namespace

	mu    sync.Mutex
	procs []*Proc
}

// Proc is a process started in a host.
type Proc struct {
	Cmd  *exec.Cmd
	Log  string // path of its combined output
	done chan struct{}
	err  error
}

// New creates n hosts named h1..hn on a fresh bridge. It skips the test when
// not root or when `ip` is missing.
func New(t testing.TB, n int) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 is not installed (scripts/deps.sh test)")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	nw := &Net{
		t:        t,
		prefix:   "mw" + id,
		bridgeNS: "mw" + id + "br",
		subnet:   int(b[0]), // 198.18.<0-255>.0/24; a random subnet keeps parallel nets apart
	}
	t.Cleanup(nw.destroy)

	nw.ip("netns", "add", nw.bridgeNS)
	nw.ip("-n", nw.bridgeNS, "link", "add", "br0", "type", "bridge")
	nw.ip("-n", nw.bridgeNS, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		nw.addHost(i)
	}
	return nw
}

func (nw *Net) addHost(i int) {
	h := &Host{
		net:  nw,
		Name: fmt.Sprintf("h%d", i),
		NS:   fmt.Sprintf("%sh%d", nw.prefix, i),
		Addr: fmt.Sprintf("198.18.%d.%d", nw.subnet, 10+i),
		veth: fmt.Sprintf("v%sh%d", nw.prefix[2:], i),
	}
	nw.ip("netns", "add", h.NS)
	nw.ip("-n", h.NS, "link", "set", "lo", "up")
	// Create the pair in the host namespace and move one end to the bridge.
	nw.ip("-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", h.veth)
	nw.ip("-n", h.NS, "link", "set", h.veth, "netns", nw.bridgeNS)
	nw.ip("-n", nw.bridgeNS, "link", "set", h.veth, "master", "br0")
	nw.ip("-n", nw.bridgeNS, "link", "set", h.veth, "up")
	nw.ip("-n", h.NS, "addr", "add", h.Addr+"/24", "dev", "eth0")
	nw.ip("-n", h.NS, "link", "set", "eth0", "up")
	nw.Hosts = append(nw.Hosts, h)
}

// ip runs `ip args...` and fails the test on error.
func (nw *Net) ip(args ...string) {
	nw.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		nw.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// destroy kills every process and deletes every namespace. Deleting a
// namespace deletes its veth ends, and the bridge with its own.
func (nw *Net) destroy() {
	for _, h := range nw.Hosts {
		h.killAll()
	}
	for _, h := range nw.Hosts {
		_ = exec.Command("ip", "netns", "del", h.NS).Run()
	}
	_ = exec.Command("ip", "netns", "del", nw.bridgeNS).Run()
}

// Cut takes the host's link down: it keeps running but hears nothing.
func (h *Host) Cut() {
	h.net.t.Helper()
	h.net.ip("-n", h.net.bridgeNS, "link", "set", h.veth, "down")
}

// Mend brings the host's link back up.
func (h *Host) Mend() {
	h.net.t.Helper()
	h.net.ip("-n", h.net.bridgeNS, "link", "set", h.veth, "up")
}

// Run runs a command in the host and returns its combined output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// DialContext opens a connection from inside the host's network namespace,
// so that the test process itself can talk to the agent's loopback API and
// DNS there, and time every call with one clock. The socket is created on a
// thread moved into the namespace for the call and moved back after it; a
// socket keeps the namespace it was made in, so the connection works from
// any goroutine afterwards.
//
// The thread must not end while it is in the host's namespace, nor end at
// all if it can help it: a child process started with Pdeathsig (as Start
// does) is killed when the thread that forked it ends, and that may be any
// thread of this process.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNamespace(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside the host's network namespace, so that the
// test process itself can serve there: a stand-in application whose
// every request the test sees. The socket is made as DialContext makes
// its connections, and is served from any goroutine.
func (h *Host) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.inNamespace(func() error {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, network, addr)
		return err
	})
	return l, err
}

// inNamespace runs f on a thread of its own moved into the host's network
// namespace, and moves the thread back after it (see DialContext).
func (h *Host) inNamespace(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := h.runInNamespace(f)
		if restored {
			runtime.UnlockOSThread()
		} // else the goroutine ends locked, and the runtime ends the thread
		ch <- err
	}()
	return <-ch
}

// runInNamespace runs f in the host's namespace on the current, locked
// thread and moves the thread back; restored reports that it is back.
func (h *Host) runInNamespace(f func() error) (restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + h.NS)
	if err != nil {
		return true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("%s: setns: %w", h.Name, err)
	}
	err = f()
	return unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil, err
}

// Start starts a long-running command in the host. Its output goes to a log
// file in the test's temp dir, which is printed when the test fails. `ip netns
// exec` replaces itself with the command, so Proc's PID is the command's.
func (h *Host) Start(name string, args ...string) *Proc {
	t := h.net.t
	t.Helper()
	logDir := t.TempDir()
	if d := os.Getenv("MESHWORK_E2E_LOGS"); d != "" {
		// Keep every log after the test, for a failure whose cause is in
		// more than the last 4 KiB.
		logDir = filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(logDir, fmt.Sprintf("%s-%s-%s.log", h.Name, filepath.Base(name), time.Now().Format("150405.000")))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: start %s: %v", h.Name, name, err)
	}
	p := &Proc{Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	// Cleanups run last first: this one, registered after the temp dirs
	// the process writes in (its log's, an agent's data dir), stops it
	// before they are removed, which a file it writes meanwhile would
	// fail. Net's destroy, registered before, finds it gone.
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		<-p.done
	})
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("--- %s %s log (last 4 KiB):\n%s", h.Name, filepath.Base(name), tail(out, 4096))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (h *Host) killAll() {
	h.mu.Lock()
	procs := h.procs
	h.mu.Unlock()
	for _, p := range procs {
		p.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Signal sends sig to the process, if it still runs.
func (p *Proc) Signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.Cmd.Process.Signal(sig)
	}
}

// Wait waits for the process to exit, up to timeout, and returns its error.
func (p *Proc) Wait(timeout time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Eventually polls cond every 100ms until it is true or timeout passes, then
// fails the test with msg and cond's last error.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", msg, timeout, err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}
