package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/meshtest"
	"github.com/meshwork/meshwork/internal/testnet"
)

// These tests run the real binary as a process: signals, sd_notify and exit
// codes only exist there.

// meshworkBinary builds this command once per test run.
func meshworkBinary(t *testing.T) string {
	t.Helper()
	return meshtest.Build(t, "./cmd/meshwork")
}

// loopbackAddr returns a random address in 127.0.0.0/8 (all of it is local on
// Linux), so that an agent can use its default ports without colliding with
// another test.
func loopbackAddr() string {
	return fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
}

// notifySocket listens where the agent's sd_notify messages go, as systemd
// would, and returns the socket path and a channel of the messages.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// expectNotify waits for a notification containing want.
func expectNotify(t *testing.T, ch <-chan string, want string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(msg, want) {
				return msg
			}
		case <-timeout:
			t.Fatalf("no %q notification", want)
		}
	}
}

func writeConf(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAgentProcess runs `meshwork agent` under a fake systemd: READY=1 once
// the API answers, SIGHUP reloads services from the config directory with
// RELOADING=1 and MONOTONIC_USEC, a broken file on reload keeps the running
// configuration, and SIGTERM leaves and drains with STOPPING=1, asks for
// the time its phases need (EXTEND_TIMEOUT_USEC), and exits with status 0.
func TestAgentProcess(t *testing.T) {
	bin := meshworkBinary(t)
	ip := loopbackAddr()
	dir := t.TempDir()
	confDir := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(confDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeConf(t, filepath.Join(confDir, "00-agent.yaml"), fmt.Sprintf(
		"dev: true\nnode: proc\nbind: %s\naddresses: {http: %s, dns: %s}\ntunnel: {vip_range: 127.250.0.0/16, drain_timeout: 42s}\n", ip, ip, ip))
	sock, notes := notifySocket(t)

	cmd, stderr, exited := startAgentProcess(t, bin, sock, "--config-dir", confDir, "--data-dir", filepath.Join(dir, "data"))

	expectNotify(t, notes, "READY=1")
	client := api.NewClient(ip + ":8500")
	ctx := context.Background()
	if _, err := client.Self(ctx); err != nil {
		t.Fatalf("READY=1 came before the API answered: %v", err)
	}

	hasWeb := func() (bool, error) {
		svcs, err := client.AgentServices(ctx)
		if err != nil {
			return false, err
		}
		for _, s := range svcs {
			if s.ID == "web" {
				return true, nil
			}
		}
		return false, nil
	}
	if ok, err := hasWeb(); err != nil || ok {
		t.Fatalf("web registered before its file exists: %v, %v", ok, err)
	}

	writeConf(t, filepath.Join(confDir, "10-web.yaml"), "service:\n  name: web\n  port: 8080\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if msg := expectNotify(t, notes, "RELOADING=1"); !strings.Contains(msg, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", msg)
	}
	expectNotify(t, notes, "READY=1")
	if ok, err := hasWeb(); err != nil || !ok {
		t.Fatalf("web not registered after SIGHUP: %v, %v", ok, err)
	}

	// A broken file on reload is refused; what runs stays.
	writeConf(t, filepath.Join(confDir, "20-bad.yaml"), "service:\n  name: api\n  prot: 80\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	expectNotify(t, notes, "RELOADING=1")
	expectNotify(t, notes, "READY=1")
	if ok, err := hasWeb(); err != nil || !ok {
		t.Fatalf("a refused reload lost web: %v, %v", ok, err)
	}
	testnet.Eventually(t, time.Minute, "the refused reload is logged with the file and key", func() error {
		if s := stderr.String(); !strings.Contains(s, "20-bad.yaml") || !strings.Contains(s, "service.prot") {
			return errors.New("not logged yet")
		}
		return nil
	})

	// Once the tunnel serves, `meshwork tunnel status` says so, and
	// SIGTERM drains it too.
	testnet.Eventually(t, time.Minute, "the tunnel to serve", func() error {
		self, err := client.Self(ctx)
		if err == nil && self.TunnelPort == 0 {
			err = errors.New("no tunnel port published yet")
		}
		return err
	})
	out, err := exec.Command(bin, "tunnel", "status", "--http-addr", ip+":8500").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "serving") || !strings.Contains(string(out), ip+":7948/udp") {
		t.Errorf("meshwork tunnel status: %v\n%s\nwant it serving on %s:7948/udp", err, out, ip)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectNotify(t, notes, "STOPPING=1")
	// systemd gets more time for each phase of the stop: the leave (5s)
	// and the configured drain, each followed by the close (10s).
	expectNotify(t, notes, "EXTEND_TIMEOUT_USEC=15000000\n")
	expectNotify(t, notes, "STATUS=draining the tunnel")
	expectNotify(t, notes, "EXTEND_TIMEOUT_USEC=52000000\n")
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("agent exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("agent did not exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "leaving the cluster") {
		t.Error("SIGTERM did not leave the cluster gracefully")
	}
	if !strings.Contains(stderr.String(), "tunnel drained") {
		t.Error("SIGTERM did not drain the tunnel")
	}
}

// TestBadConfigStops checks that the agent and `meshwork validate` refuse a
// configuration with an error that names the file, the line and the key, and
// exit non-zero.
func TestBadConfigStops(t *testing.T) {
	bin := meshworkBinary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeConf(t, bad, "node: n1\ndata_dir: /tmp/x\nports:\n  http: 70000\n")
	good := filepath.Join(dir, "good.yaml")
	writeConf(t, good, "node: n1\ndata_dir: /tmp/x\nadvertise: 10.0.0.1\ncluster_key: "+strings.Repeat("A", 43)+"=\n")
	exposed := filepath.Join(dir, "exposed.yaml")
	writeConf(t, exposed, "node: n1\ndata_dir: /tmp/x\nadvertise: 10.0.0.1\ncluster_key: "+strings.Repeat("A", 43)+"=\n")
	if err := os.Chmod(exposed, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"agent refuses", []string{"agent", "--config", bad}, 1, []string{"bad.yaml:4", "ports.http", "70000"}},
		{"validate refuses", []string{"validate", bad}, 1, []string{"bad.yaml:4", "ports.http"}},
		{"validate names a missing file", []string{"validate", filepath.Join(dir, "nope.yaml")}, 1, []string{"nope.yaml", "not found"}},
		{"validate accepts", []string{"validate", good}, 0, []string{"configuration is valid"}},
		{"validate warns of a readable secret", []string{"validate", exposed}, 0, []string{"warning: " + exposed + " holds cluster_key", "0644", "configuration is valid"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, tc.args...).CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d; output: %s", code, tc.wantCode, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output %q does not contain %q", out, w)
				}
			}
		})
	}
}

// startAgentProcess starts `bin agent args...` with NOTIFY_SOCKET=sock. The
// exit status arrives on exited (put it back for the cleanup, which kills
// the agent, waits for it and shows its log if the test failed).
func startAgentProcess(t *testing.T, bin, sock string, args ...string) (*exec.Cmd, *meshtest.LogBuffer, chan error) {
	t.Helper()
	stderr := &meshtest.LogBuffer{}
	cmd := exec.Command(bin, append([]string{"agent"}, args...)...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("agent log:\n%s", stderr.String())
		}
	})
	return cmd, stderr, exited
}
