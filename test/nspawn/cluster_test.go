//go:build e2e

// Package nspawn runs Meshwork on booted Debian hosts: systemd-nspawn
// containers with their own systemd, sshd and systemd-resolved, on a private
// bridge, provisioned over SSH by the Ansible role in ansible/. It checks what
// only a real boot shows: the Type=notify handshake, the unit's sandbox, the
// resolved drop-in, and a rolling upgrade driven by Ansible.
//
// Run as root: go test -tags e2e -v -count=1 -timeout 40m ./test/nspawn/
package nspawn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Network of the booted hosts. The names are unique to this scenario so that
// it can run beside the network-namespace tests.
const (
	bridgeName   = "mwbr0"
	bridgeAddr   = "198.19.77.1"
	subnetPrefix = "198.19.77."
	subnetBits   = 24
	lockFile     = "/run/lock/meshwork-e2e-nspawn.lock"
	workPrefix   = "meshwork-e2e-nspawn-"
	// hostPrefix begins every host's machine name.
	hostPrefix = "mw-nsp-"
)

// Cluster is a set of booted hosts on one bridge, and what they need to be
// reached over SSH.
type Cluster struct {
	t       *testing.T
	work    string
	rootfs  string
	sshKey  string // private key file
	known   string // known_hosts with every host's generated key
	hosts   []*Host
	timings *Timings
	// acl is true when the agents run with ACLs on (the role's default),
	// and the CLI on the hosts needs a token.
	acl bool
	// serverKey is set when the role gives the servers a server_key.
	serverKey bool
	// playbookOut is the output of every playbook run, for the checks that
	// no secret made on the hosts was printed.
	playbookOut []string
	// playDir holds the playbooks and the ansible.cfg that names the role
	// installed from its tarball (installRole).
	playDir string
}

// Host is one booted systemd-nspawn container.
type Host struct {
	Name string
	IP   string

	c       *Cluster
	dir     string // upper, work and merged overlay directories live here
	root    string // the merged overlay: the container's /
	cmd     *exec.Cmd
	started bool          // systemd-nspawn was started
	done    chan struct{} // closed when systemd-nspawn has exited
	waitErr error
	console string // file with the container's console output
}

// lockScenario makes concurrent runs of this scenario wait for each other:
// they would share the bridge and addresses.
func lockScenario(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock %s: %v", lockFile, err)
	}
	t.Cleanup(func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}

// newCluster prepares the bridge, the SSH client key and the work directory.
// Hosts are added with Boot. Everything is torn down in t.Cleanup, also when
// the test fails or panics.
func newCluster(t *testing.T, rootfs string, timings *Timings) *Cluster {
	t.Helper()
	work, err := os.MkdirTemp("", workPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(work); err != nil {
			t.Errorf("remove %s: %v", work, err)
		}
	})
	c := &Cluster{t: t, work: work, rootfs: rootfs, timings: timings}
	c.sshKey = filepath.Join(c.work, "id_ed25519")
	c.known = filepath.Join(c.work, "known_hosts")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "meshwork-e2e", "-f", c.sshKey)

	// A bridge left by a run that was killed before its cleanup is ours:
	// it carries this scenario's name.
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		t.Logf("removing stale bridge %s", bridgeName)
		run(t, "ip", "link", "del", bridgeName)
	}
	run(t, "ip", "link", "add", bridgeName, "type", "bridge")
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", bridgeName).CombinedOutput(); err != nil {
			t.Errorf("delete bridge %s: %v: %s", bridgeName, err, out)
		}
	})
	run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", bridgeAddr, subnetBits), "dev", bridgeName)
	run(t, "ip", "link", "set", bridgeName, "up")
	t.Cleanup(c.teardown)
	return c
}

// Boot starts a host from its own overlay of the cached rootfs; WaitSSH
// waits until it is up. Hosts are numbered from 1; host n gets .10+n.
func (c *Cluster) Boot(name string, n int) *Host {
	t := c.t
	t.Helper()
	h := &Host{Name: name, IP: fmt.Sprintf("%s%d", subnetPrefix, 10+n), c: c, done: make(chan struct{})}
	h.dir = filepath.Join(c.work, "hosts", name)
	h.root = filepath.Join(h.dir, "root")
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", c.rootfs, filepath.Join(h.dir, "upper"), filepath.Join(h.dir, "work"))
	if err := syscall.Mount("overlay", h.root, "overlay", 0, opts); err != nil {
		t.Fatalf("%s: mount overlay: %v", name, err)
	}
	// From here on, teardown stops the host and unmounts its overlay.
	c.hosts = append(c.hosts, h)
	h.personalize()

	h.console = filepath.Join(h.dir, "console.log")
	out, err := os.Create(h.console)
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command("systemd-nspawn",
		"--quiet", "--register=no", "--keep-unit", "--boot",
		"--directory", h.root, "--machine", name,
		"--network-bridge", bridgeName,
		"--resolv-conf=off", "--timezone=off", "--link-journal=no",
		"--console=read-only")
	h.cmd.Stdout, h.cmd.Stderr = out, out
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("%s: systemd-nspawn: %v", name, err)
	}
	h.started = true
	go func() {
		h.waitErr = h.cmd.Wait()
		out.Close()
		close(h.done)
	}()
	return h
}

// teardown stops every host at once, then unmounts their overlays. It runs
// as a t.Cleanup registered before any host boots.
func (c *Cluster) teardown() {
	if c.timings != nil {
		defer c.timings.Phase("teardown: stop hosts, unmount")()
	}
	var wg sync.WaitGroup
	for _, h := range c.hosts {
		if !h.started {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.stop()
		}()
	}
	wg.Wait()
	for _, h := range c.hosts {
		if err := syscall.Unmount(h.root, 0); err != nil {
			c.t.Logf("%s: unmount %s: %v; detaching", h.Name, h.root, err)
			if err := syscall.Unmount(h.root, syscall.MNT_DETACH); err != nil {
				c.t.Errorf("%s: unmount %s: %v", h.Name, h.root, err)
			}
		}
	}
}

// personalize writes what makes a host itself into its overlay before boot:
// name, address, SSH host keys and the client's authorized key.
func (h *Host) personalize() {
	t := h.c.t
	t.Helper()
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(h.root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/hostname", h.Name+"\n", 0o644)
	write("etc/hosts", fmt.Sprintf("127.0.0.1 localhost\n%s %s\n", h.IP, h.Name), 0o644)
	write("etc/systemd/network/10-host0.network", fmt.Sprintf(
		"[Match]\nName=host0\n\n[Network]\nAddress=%s/%d\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nLLMNR=no\n", h.IP, subnetBits), 0o644)
	pub, err := os.ReadFile(h.c.sshKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	write("root/.ssh/authorized_keys", string(pub), 0o600)
	if err := os.Chmod(filepath.Join(h.root, "root/.ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "ssh-keygen", "-q", "-A", "-f", h.root)
	hostKey, err := os.ReadFile(filepath.Join(h.root, "etc/ssh/ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(h.c.known, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(hostKey))
	fmt.Fprintf(f, "%s %s %s\n", h.IP, fields[0], fields[1])
	f.Close()
}

// sshArgs are the options every SSH connection to the hosts uses, Ansible's
// included: the generated key, and the hosts' own keys as the only trusted
// ones.
func (c *Cluster) sshArgs() []string {
	return []string{
		"-i", c.sshKey,
		"-o", "UserKnownHostsFile=" + c.known,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5",
		"-o", "LogLevel=ERROR",
	}
}

// WaitSSH polls until a command runs over SSH, or fails the test with the
// console output.
func (h *Host) WaitSSH(limit time.Duration) {
	t := h.c.t
	t.Helper()
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-h.done:
			t.Fatalf("%s: systemd-nspawn exited during boot: %v\n%s", h.Name, h.waitErr, h.consoleTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := h.SSHContext(ctx, "true")
		cancel()
		if err == nil {
			return
		}
		lastErr = err
		waitOrDone(h.done, 500*time.Millisecond)
	}
	t.Fatalf("%s: no SSH after %s: %v\n%s", h.Name, limit, lastErr, h.consoleTail())
}

// waitOrDone pauses between polls, returning early if done closes.
func waitOrDone(done <-chan struct{}, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
}

// SSHContext runs a shell command on the host and returns its stdout.
func (h *Host) SSHContext(ctx context.Context, command string) (string, error) {
	args := append(h.c.sshArgs(), "root@"+h.IP, command)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %q: %w: %s", h.Name, command, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// SSHInput runs a shell command on the host with input on its standard
// input: how a secret reaches a command without showing in its arguments.
func (h *Host) SSHInput(ctx context.Context, command, input string) (string, error) {
	args := append(h.c.sshArgs(), "root@"+h.IP, command)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(input), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %q: %w: %s", h.Name, command, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// SSH runs a command that must succeed within a minute.
func (h *Host) SSH(command string) string {
	h.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := h.SSHContext(ctx, command)
	if err != nil {
		h.c.t.Fatal(err)
	}
	return out
}

// CopyTo writes a local file to path on the host.
func (h *Host) CopyTo(local, path string, mode os.FileMode) {
	t := h.c.t
	t.Helper()
	data, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	args := append(h.c.sshArgs(), "root@"+h.IP, fmt.Sprintf("cat > %s && chmod %o %s", path, mode, path))
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: copy %s to %s: %v: %s", h.Name, local, path, err, out)
	}
}

// stop powers the host off: systemd-nspawn turns SIGTERM into an orderly
// shutdown of the container's systemd. If that takes too long, it kills the
// container's init, which ends every process of its PID namespace.
func (h *Host) stop() {
	t := h.c.t
	select {
	case <-h.done:
		return
	default:
	}
	if t.Failed() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		journal, err := h.SSHContext(ctx, "journalctl --no-pager -o short-precise -u meshwork.service -n 60")
		cancel()
		t.Logf("%s: meshwork journal (%v):\n%s", h.Name, err, journal)
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
		return
	case <-time.After(90 * time.Second):
	}
	nspawn := h.cmd.Process.Pid
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", nspawn, nspawn))
	for _, f := range strings.Fields(string(children)) {
		if pid, err := strconv.Atoi(f); err == nil {
			t.Logf("%s: no shutdown within 90s; killing its init (pid %d); console:\n%s", h.Name, pid, h.consoleTail())
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case <-h.done:
		return
	case <-time.After(15 * time.Second):
	}
	t.Logf("%s: killing systemd-nspawn (pid %d)", h.Name, nspawn)
	_ = h.cmd.Process.Kill()
	select {
	case <-h.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s: systemd-nspawn (pid %d) did not exit after SIGKILL", h.Name, nspawn)
	}
}

// consoleTail returns the last lines the container wrote to its console.
func (h *Host) consoleTail() string {
	f, err := os.Open(h.console)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 15 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// run executes a host command that must succeed, and returns its stdout.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		t.Fatalf("%s: %v", name, err)
	}
	return stdout.String()
}

// cleanStale removes what a run killed before its cleanup (go test's own
// timeout skips every t.Cleanup) left behind: its systemd-nspawn processes,
// recognised by this scenario's bridge on their command line, its overlay
// mounts and its work directories. It runs under the scenario lock, so none
// of them belongs to a live run.
func cleanStale(t *testing.T) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != "systemd-nspawn" || !strings.Contains(string(b), "--network-bridge\x00"+bridgeName+"\x00") {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		t.Logf("killing stale systemd-nspawn pid %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Dir(p)); err != nil {
				break
			}
			waitOrDone(nil, 100*time.Millisecond)
		}
	}
	// A container killed with SIGKILL leaves the host end of its veth
	// pair, which systemd-nspawn names vb-<machine>: the next boot of that
	// machine would fail with "File exists".
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifc := range ifaces {
			if strings.HasPrefix(ifc.Name, "vb-"+hostPrefix) {
				t.Logf("removing stale veth %s", ifc.Name)
				if out, err := exec.Command("ip", "link", "del", ifc.Name).CombinedOutput(); err != nil {
					t.Errorf("remove stale veth %s: %v: %s", ifc.Name, err, out)
				}
			}
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(os.TempDir(), workPrefix)
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], stale) {
			t.Logf("unmounting stale %s", f[4])
			_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
	dirs, _ := filepath.Glob(stale + "*")
	for _, d := range dirs {
		t.Logf("removing stale %s", d)
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("remove stale %s: %v", d, err)
		}
	}
}
