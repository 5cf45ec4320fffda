//go:build e2e

package nspawn

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// telemetryPort is where the booted agents' telemetry listener listens, on
// the host's own address: the test reads /readyz from outside the host, as
// a load balancer or Prometheus would.
const telemetryPort = 9101

// watchdogSec is the drop-in's WatchdogSec=: short, so that a frozen agent
// is restarted within seconds.
const watchdogSec = 3 * time.Second

// TestBootedWatchdog boots two Debian hosts and installs the binary and the
// shipped unit on them by hand (no Ansible: one boot, about a minute). It
// checks, from outside the hosts:
//   - /readyz on the telemetry listener: a server that bootstraps alone is
//     ready; a client whose server is down is not (503, no member, no
//     certificate, no policy; `meshwork status` exits 1); once its server
//     is back, it joins, gets its leaf and the policy, and is ready (200,
//     `meshwork status` exits 0).
//   - the watchdog: under a drop-in with WatchdogSec=3s the agent runs on,
//     its pings keeping systemd content; frozen with SIGSTOP, it is killed
//     by systemd for the watchdog timeout and started again (a new MainPID,
//     active, the timeout and Go's SIGABRT dump in the journal), and it is
//     ready again.
//
// Run as root: go test -tags e2e -run TestBootedWatchdog -count=1 -v ./test/nspawn/
func TestBootedWatchdog(t *testing.T) {
	requireTools(t, "systemd-nspawn", "debootstrap", "ssh", "ssh-keygen", "ip")
	tm := &Timings{start: time.Now()}
	t.Cleanup(func() { t.Logf("timings:\n%s", tm) })
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-3*time.Minute))
		defer cancel()
	}

	end := tm.Phase("build binary")
	bin := filepath.Join(t.TempDir(), "meshwork")
	buildBinary(t, repo, bin, "e2e-watchdog-"+time.Now().UTC().Format("20060102T150405"))
	end()
	end = tm.Phase("rootfs (debootstrap or cache)")
	rootfs := strings.TrimSpace(run(t, filepath.Join(repo, "scripts/nspawn/rootfs.sh")))
	end()

	lockScenario(t)
	cleanStale(t)
	c := newCluster(t, rootfs, tm)
	end = tm.Phase("boot 2 hosts to sshd")
	server, client := c.Boot(hostPrefix+"1", 1), c.Boot(hostPrefix+"2", 2)
	server.WaitSSH(2 * time.Minute)
	client.WaitSSH(2 * time.Minute)
	end()

	end = tm.Phase("install binary and unit")
	clusterKey, serverKey := newKey(t), newKey(t)
	server.installAgent(repo, bin, fmt.Sprintf("node: %s\ndata_dir: /var/lib/meshwork\nadvertise: %s\nserver: true\nbootstrap_expect: 1\n"+
		"cluster_key: %q\nserver_key: %q\ntelemetry: {listen: \"%s:%d\"}\n", server.Name, server.IP, clusterKey, serverKey, server.IP, telemetryPort))
	client.installAgent(repo, bin, fmt.Sprintf("node: %s\ndata_dir: /var/lib/meshwork\nadvertise: %s\nretry_join: [%q]\n"+
		"cluster_key: %q\nca: {token_file: /etc/meshwork/ca-token}\ntelemetry: {listen: \"%s:%d\"}\n", client.Name, client.IP, server.IP, clusterKey, client.IP, telemetryPort))
	end()

	// 1. A server that bootstraps alone is a cluster of its own: ready.
	end = tm.Phase("server ready")
	server.SSH("systemctl start meshwork.service")
	server.waitReadyz(ctx, http.StatusOK)
	if out, err := server.SSHContext(ctx, meshworkBin+" status"); err != nil || !strings.Contains(out, "ready: yes") {
		t.Errorf("%s: meshwork status: %v\n%s", server.Name, err, out)
	}
	token := strings.TrimSpace(server.SSH(meshworkBin + " ca token " + client.Name))
	end()

	// 2. A client whose only server is down has joined nothing: not ready.
	end = tm.Phase("client not ready, then ready")
	server.SSH("systemctl stop meshwork.service")
	if _, err := client.SSHInput(ctx, "cat > /etc/meshwork/ca-token && chown root:meshwork /etc/meshwork/ca-token && chmod 0640 /etc/meshwork/ca-token", token); err != nil {
		t.Fatal(err)
	}
	client.SSH("systemctl start meshwork.service")
	r := client.waitReadyz(ctx, http.StatusServiceUnavailable)
	for _, ch := range r.Checks {
		if ch.OK {
			t.Errorf("%s: with its server down, check %s passes: %s", client.Name, ch.Name, ch.Reason)
		}
	}
	if out, err := client.SSHContext(ctx, meshworkBin+" status"); err == nil || !strings.Contains(out, "not joined") {
		t.Errorf("%s: meshwork status with the server down: %v, want exit 1 saying it has not joined\n%s", client.Name, err, out)
	}

	// 3. The server is back: the client joins, gets its leaf and the policy.
	server.SSH("systemctl start meshwork.service")
	client.waitReadyz(ctx, http.StatusOK)
	if out, err := client.SSHContext(ctx, meshworkBin+" status"); err != nil {
		t.Errorf("%s: meshwork status after join: %v\n%s", client.Name, err, out)
	} else {
		t.Logf("%s: meshwork status after join:\n%s", client.Name, out)
	}
	end()

	// 4. The watchdog.
	end = tm.Phase("watchdog restarts a frozen agent")
	client.checkWatchdog(ctx)
	end()
	end = tm.Phase("ready again after the restart")
	client.waitReadyz(ctx, http.StatusOK)
	end()
}

// installAgent puts the binary, the shipped unit and sysusers file, and the
// configuration conf (which holds keys: 0640 root:meshwork, as the role
// writes it) on h. The agent is not started.
func (h *Host) installAgent(repo, bin, conf string) {
	t := h.c.t
	t.Helper()
	h.CopyTo(bin, "/usr/local/bin/meshwork", 0o755)
	h.CopyTo(filepath.Join(repo, "systemd/meshwork.service"), "/etc/systemd/system/meshwork.service", 0o644)
	h.SSH("mkdir -p /etc/sysusers.d /etc/meshwork")
	h.CopyTo(filepath.Join(repo, "systemd/meshwork.sysusers"), "/etc/sysusers.d/meshwork.conf", 0o644)
	h.SSH("systemd-sysusers && systemctl daemon-reload")
	if _, err := h.SSHInput(context.Background(), "cat > /etc/meshwork/meshwork.yaml && chown root:meshwork /etc/meshwork/meshwork.yaml && chmod 0640 /etc/meshwork/meshwork.yaml && meshwork validate /etc/meshwork", conf); err != nil {
		t.Fatal(err)
	}
}

// readiness is the body of /readyz.
type readiness struct {
	Ready  bool `json:"ready"`
	Checks []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Reason string `json:"reason"`
	} `json:"checks"`
}

// readyz reads /readyz on h's telemetry listener, from this machine.
func (h *Host) readyz(ctx context.Context) (int, readiness, error) {
	var r readiness
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/readyz", h.IP, telemetryPort), nil)
	if err != nil {
		return 0, r, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return resp.StatusCode, r, fmt.Errorf("body %q: %w", b, err)
	}
	return resp.StatusCode, r, nil
}

// waitReadyz polls /readyz until it answers status, with a body that
// agrees, for up to two minutes, and returns that body.
func (h *Host) waitReadyz(ctx context.Context, status int) readiness {
	t := h.c.t
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		code, r, err := h.readyz(ctx)
		// gossip, certificate and policy, and the catalog since it is
		// carried over a restart.
		if err == nil && code == status && r.Ready == (status == http.StatusOK) && len(r.Checks) >= 3 {
			t.Logf("%s: /readyz %d: %+v", h.Name, code, r.Checks)
			return r
		}
		last = fmt.Sprintf("%d %+v %v", code, r, err)
		waitOrDone(ctx.Done(), 500*time.Millisecond)
	}
	t.Fatalf("%s: /readyz never answered %d; last: %s\n%s", h.Name, status, last,
		h.SSH("journalctl -u meshwork.service --no-pager -n 40 || true"))
	return readiness{}
}

// checkWatchdog shortens WatchdogSec= with a drop-in and restarts the
// agent; checks that it runs on past several intervals (its pings arrive),
// then freezes it with SIGSTOP and waits for systemd to restart it for the
// watchdog timeout. The drop-in is removed at the end.
func (h *Host) checkWatchdog(ctx context.Context) {
	t := h.c.t
	t.Helper()
	dropIn := "/etc/systemd/system/meshwork.service.d/50-e2e-watchdog.conf"
	h.SSH(fmt.Sprintf("mkdir -p %s && printf '[Service]\\nWatchdogSec=%s\\n' > %s && systemctl daemon-reload && systemctl restart meshwork.service",
		filepath.Dir(dropIn), watchdogSec, dropIn))
	defer h.SSH("rm -f " + dropIn + " && systemctl daemon-reload")
	props := parseProps(h.SSH("systemctl show -p WatchdogUSec,MainPID,NRestarts,ActiveEnterTimestampMonotonic meshwork.service"))
	if props["WatchdogUSec"] != watchdogSec.String() {
		t.Fatalf("%s: the drop-in did not take: WatchdogUSec=%s", h.Name, props["WatchdogUSec"])
	}
	pid, restarts := props["MainPID"], props["NRestarts"]
	activeAt, err := strconv.ParseInt(props["ActiveEnterTimestampMonotonic"], 10, 64)
	if err != nil {
		t.Fatalf("%s: ActiveEnterTimestampMonotonic %q", h.Name, props["ActiveEnterTimestampMonotonic"])
	}

	// Alive, it pings: three intervals pass with no restart. The containers
	// share this machine's monotonic clock.
	if _, err := h.pollSSH(ctx, "systemctl show -p MainPID,NRestarts,ActiveState meshwork.service", time.Minute, func(out string) bool {
		return monotonic(t)-time.Duration(activeAt)*time.Microsecond > 3*watchdogSec
	}); err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	if p := parseProps(h.SSH("systemctl show -p MainPID,NRestarts,ActiveState meshwork.service")); p["MainPID"] != pid || p["NRestarts"] != restarts || p["ActiveState"] != "active" {
		t.Fatalf("%s: a running agent was restarted by the watchdog: %v, was pid %s with %s restarts\n%s", h.Name, p, pid, restarts,
			h.SSH("journalctl -u meshwork.service --no-pager -n 40 || true"))
	}

	// Frozen, it does not: systemd kills it and starts it again.
	since := strings.TrimSpace(h.SSH("date +%s.%N"))
	h.SSH("kill -STOP " + pid)
	out, err := h.pollSSH(ctx, "systemctl show -p MainPID,NRestarts,ActiveState,SubState meshwork.service", 2*time.Minute, func(out string) bool {
		p := parseProps(out)
		return p["MainPID"] != pid && p["MainPID"] != "0" && p["ActiveState"] == "active" && p["SubState"] == "running"
	})
	log := h.SSH("journalctl --no-pager -o cat -u meshwork.service --since @" + since)
	if err != nil {
		t.Fatalf("%s: the frozen agent (pid %s) was not restarted: %v\n%s", h.Name, pid, err, log)
	}
	p := parseProps(out)
	n, _ := strconv.Atoi(p["NRestarts"])
	before, _ := strconv.Atoi(restarts)
	if n <= before {
		t.Errorf("%s: NRestarts %d after the watchdog, was %d", h.Name, n, before)
	}
	// systemd's verdict, and Go's dump of the goroutines on SIGABRT.
	for _, want := range []string{"Watchdog timeout", "Failed with result 'watchdog'", "SIGABRT: abort", "goroutine "} {
		if !strings.Contains(log, want) {
			t.Errorf("%s: the journal since the freeze does not show %q:\n%s", h.Name, want, log)
		}
	}
	var seen []string
	goroutines := 0
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.HasPrefix(line, "goroutine "):
			goroutines++
		case strings.Contains(line, "Watchdog timeout") || strings.Contains(line, "SIGABRT") || strings.Contains(line, "Failed with result"):
			seen = append(seen, line)
		}
	}
	seen = append(seen, fmt.Sprintf("(and the stacks of %d goroutines)", goroutines))
	t.Logf("%s: frozen pid %s restarted by the watchdog as pid %s (NRestarts %s); the journal:\n%s", h.Name, pid, p["MainPID"], p["NRestarts"], strings.Join(seen, "\n"))
}
