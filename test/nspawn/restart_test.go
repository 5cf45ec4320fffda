//go:build e2e

package nspawn

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// restartWatchdogSec is the drop-in's WatchdogSec=: short, so that an
// upgraded agent that systemd does not take for the main process, or that
// does not ping, is killed within the test.
const restartWatchdogSec = 2 * time.Second

// echoPort is where the echo service listens on the instance's host, and
// the port of its VIP on the caller's host.
const echoPort = 9000

// loadReport is restartload's report (test/nspawn/restartload).
type loadReport struct {
	Requests  int      `json:"requests"`
	OK        int      `json:"ok"`
	Refused   int      `json:"refused"`
	Reset     int      `json:"reset"`
	TimedOut  int      `json:"timed_out"`
	Other     int      `json:"other"`
	Errors    []string `json:"errors"`
	MaxWaitMS float64  `json:"max_wait_ms"`
	P50MS     float64  `json:"p50_ms"`
	P99MS     float64  `json:"p99_ms"`
	Over1s    int      `json:"over_1s"`
	Slowest   []string `json:"slowest"`
	FailedAt  []string `json:"failed_at"`
	Timeline  []string `json:"timeline"`

	DNSSent       int      `json:"dns_sent"`
	DNSAnswered   int      `json:"dns_answered"`
	DNSUnanswered int      `json:"dns_unanswered"`
	DNSNotNoError int      `json:"dns_not_noerror"`
	DNSMaxMS      float64  `json:"dns_max_ms"`
	DNSErrors     []string `json:"dns_errors"`

	Long         int      `json:"long"`
	LongSurvived int      `json:"long_survived"`
	LongErrors   []string `json:"long_errors"`
}

// TestBootedRestart boots two Debian hosts with the shipped unit, installed
// by hand as TestBootedWatchdog does: the instance's host (a server that
// also runs an echo service) and the caller's host (a client). An
// application on the caller's host calls the echo service through its VIP
// at 500 requests/s, each on a new connection, asks the local agent's DNS
// 200 times a second (each answer due within 1 s), and holds four
// long-lived connections that exchange a line every 50 ms. Under that load:
//
//   - `systemctl restart meshwork` on the caller's host, then on the
//     instance's host: the new agent takes its sockets from the unit's file
//     descriptor store (LISTEN_FDS, its log says so), and the old one
//     stopped as for a restart (no leave, a short drain);
//   - the upgrade in place, a new binary and `systemctl kill
//     --kill-whom=main --signal=SIGUSR2 meshwork`, on the caller's host,
//     then on the instance's host: the new process becomes the unit's main
//     process (MainPID), is active and running, and runs the new version;
//     under a drop-in with WatchdogSec=2s, systemd takes its pings (it is
//     not killed three intervals later) and refuses no notification.
//
// Each asserts no failed request (none refused, reset or left waiting
// until its 10 s timeout), no unanswered DNS query, and that every
// long-lived connection survives. The longest wait of a new connection is
// logged, not asserted: it is a timing.
//
// Run as root: go test -tags e2e -run TestBootedRestart -count=1 -v ./test/nspawn/
func TestBootedRestart(t *testing.T) {
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

	end := tm.Phase("build binaries")
	dir := t.TempDir()
	stamp := time.Now().UTC().Format("20060102T150405")
	bin, binNext, load := filepath.Join(dir, "meshwork"), filepath.Join(dir, "meshwork.next"), filepath.Join(dir, "restartload")
	version, nextVersion := "e2e-restart-"+stamp, "e2e-restart-"+stamp+"-next"
	buildBinary(t, repo, bin, version)
	buildBinary(t, repo, binNext, nextVersion)
	build := exec.Command("go", "build", "-tags", "e2e", "-o", load, "./test/nspawn/restartload")
	build.Dir = repo
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build restartload: %v\n%s", err, b)
	}
	end()
	end = tm.Phase("rootfs (debootstrap or cache)")
	rootfs := strings.TrimSpace(run(t, filepath.Join(repo, "scripts/nspawn/rootfs.sh")))
	end()

	lockScenario(t)
	cleanStale(t)
	c := newCluster(t, rootfs, tm)
	end = tm.Phase("boot 2 hosts to sshd")
	instance, caller := c.Boot(hostPrefix+"1", 1), c.Boot(hostPrefix+"2", 2)
	instance.WaitSSH(2 * time.Minute)
	caller.WaitSSH(2 * time.Minute)
	end()

	end = tm.Phase("install, start, join")
	clusterKey, serverKey := newKey(t), newKey(t)
	tunnel := "tunnel: {default_policy: allow}\n"
	instance.installAgent(repo, bin, fmt.Sprintf("node: %s\ndata_dir: /var/lib/meshwork\nadvertise: %s\nserver: true\nbootstrap_expect: 1\n"+
		"cluster_key: %q\nserver_key: %q\ntelemetry: {listen: \"%s:%d\"}\n%sservices:\n- {name: echo, address: 127.0.0.1, port: %d}\n",
		instance.Name, instance.IP, clusterKey, serverKey, instance.IP, telemetryPort, tunnel, echoPort))
	caller.installAgent(repo, bin, fmt.Sprintf("node: %s\ndata_dir: /var/lib/meshwork\nadvertise: %s\nretry_join: [%q]\n"+
		"cluster_key: %q\nca: {token_file: /etc/meshwork/ca-token}\ntelemetry: {listen: \"%s:%d\"}\n%s",
		caller.Name, caller.IP, instance.IP, clusterKey, caller.IP, telemetryPort, tunnel))
	for _, h := range []*Host{instance, caller} {
		h.CopyTo(load, "/usr/local/bin/restartload", 0o755)
		h.CopyTo(binNext, "/usr/local/bin/meshwork.next", 0o755)
		h.SSH(fmt.Sprintf("mkdir -p /etc/systemd/system/meshwork.service.d && printf '[Service]\\nWatchdogSec=%s\\n' > /etc/systemd/system/meshwork.service.d/50-e2e-watchdog.conf && systemctl daemon-reload",
			restartWatchdogSec))
	}
	instance.SSH(fmt.Sprintf("systemd-run --unit=e2e-echo /usr/local/bin/restartload serve -listen 127.0.0.1:%d", echoPort))
	instance.SSH("systemctl start meshwork.service")
	instance.waitReadyz(ctx, http.StatusOK)
	token := strings.TrimSpace(instance.SSH(meshworkBin + " ca token " + caller.Name))
	if _, err := caller.SSHInput(ctx, "cat > /etc/meshwork/ca-token && chown root:meshwork /etc/meshwork/ca-token && chmod 0640 /etc/meshwork/ca-token", token); err != nil {
		t.Fatal(err)
	}
	caller.SSH("systemctl start meshwork.service")
	caller.waitReadyz(ctx, http.StatusOK)
	for _, h := range []*Host{instance, caller} {
		h.checkFDStore(ctx)
	}
	vip := c.echoVIP(ctx, caller)
	end()

	upgraded := map[*Host]upgradedAgent{}
	// Every step: no failed request (the sockets outlive the agent, the
	// connections in flight are held for the next agent, and callers wait
	// for a restarting instance), every long-lived connection kept, no
	// DNS query unanswered.
	for _, step := range []struct {
		name   string
		host   *Host
		action func(context.Context, *Host)
	}{
		{"systemctl restart, caller's host", caller, restartAgent},
		{"systemctl restart, instance's host", instance, restartAgent},
		{"upgrade in place, caller's host", caller, upgradeAgent(nextVersion, upgraded)},
		{"upgrade in place, instance's host", instance, upgradeAgent(nextVersion, upgraded)},
	} {
		end := tm.Phase(step.name)
		since := strings.TrimSpace(caller.SSH("date +%s.%N"))
		rep := c.underLoad(ctx, caller, vip, func() { step.action(ctx, step.host) })
		end()
		t.Logf("%s: slowest requests %q; first failures at %q; the caller's agent on its failed connections:\n%s", step.name, rep.Slowest, rep.FailedAt,
			countLines(caller.SSH("journalctl --no-pager -o cat -u meshwork.service --since @"+since+" | grep 'outbound connection failed' | sed -e 's/^time=[^ ]* //' -e 's/source=[^ ]* //' || true")))
		t.Logf("%s: %d requests (%d ok), longest wait of a new connection %.0f ms (p50 %.1f ms, p99 %.1f ms, %d over 1 s); "+
			"DNS %d sent, %d answered (%d not NOERROR), longest %.0f ms; long-lived connections surviving: %d of %d %q",
			step.name, rep.Requests, rep.OK, rep.MaxWaitMS, rep.P50MS, rep.P99MS, rep.Over1s,
			rep.DNSSent, rep.DNSAnswered, rep.DNSNotNoError, rep.DNSMaxMS, rep.LongSurvived, rep.Long, rep.LongErrors)
		t.Logf("%s: requests by the quarter second they started in: %q", step.name, rep.Timeline)
		failed := rep.Requests - rep.OK
		switch {
		case rep.Requests == 0:
			t.Errorf("%s: no request was made", step.name)
		case failed != 0:
			// A timeout is a connection that waited 10 s in a queue no
			// agent accepts from: a VIP reopened while systemd's store
			// held its old socket did that, until the agent asked
			// systemd to release it.
			t.Errorf("%s: %d of %d requests failed (%d refused, %d reset, %d timed out, %d other): %q",
				step.name, failed, rep.Requests, rep.Refused, rep.Reset, rep.TimedOut, rep.Other, rep.Errors)
		}
		// The agent that stops holds every connection it carries, and
		// its successor resumes them (docs/restart.md, "Connections
		// carried over").
		if rep.Long == 0 || rep.LongSurvived != rep.Long {
			t.Errorf("%s: %d of %d long-lived connections survived: %q", step.name, rep.LongSurvived, rep.Long, rep.LongErrors)
		}
		if rep.DNSUnanswered != 0 || rep.DNSSent == 0 {
			t.Errorf("%s: %d of %d DNS queries unanswered within 1 s: %q", step.name, rep.DNSUnanswered, rep.DNSSent, rep.DNSErrors)
		}
		// The mesh is whole again before the next step: the agent just
		// restarted is ready.
		step.host.waitReadyz(ctx, http.StatusOK)
	}

	// The upgraded agents are the units' main processes and ping the
	// watchdog: three intervals after the upgrade, systemd has not killed
	// them.
	end = tm.Phase("watchdog after the upgrades")
	for _, h := range []*Host{caller, instance} {
		u := upgraded[h]
		out, err := h.pollSSH(ctx, "systemctl show -p MainPID,NRestarts,ActiveState,SubState meshwork.service", time.Minute, func(string) bool {
			return monotonic(t)-u.at > 3*restartWatchdogSec
		})
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if p := parseProps(out); p["MainPID"] != u.pid || p["NRestarts"] != "0" || p["SubState"] != "running" {
			t.Errorf("%s: %v after %v with WatchdogSec=%v; want pid %s, the upgraded agent, running with no restart\n%s", h.Name, p, 3*restartWatchdogSec, restartWatchdogSec, u.pid,
				h.SSH("journalctl --no-pager -o cat -u meshwork.service -n 30"))
		}
	}
	end()
}

// upgradedAgent is the main process an upgrade in place left, and when
// (CLOCK_MONOTONIC, which the hosts share with the test).
type upgradedAgent struct {
	pid string
	at  time.Duration
}

// checkFDStore asserts that systemd's store holds the agent's sockets.
func (h *Host) checkFDStore(ctx context.Context) {
	t := h.c.t
	t.Helper()
	out, err := h.pollSSH(ctx, "systemctl show -p NFileDescriptorStore,FileDescriptorStoreMax meshwork.service", 30*time.Second, func(out string) bool {
		n, err := strconv.Atoi(parseProps(out)["NFileDescriptorStore"])
		return err == nil && n > 0
	})
	if err != nil {
		t.Fatalf("%s: the agent's sockets are not in systemd's file descriptor store: %v", h.Name, err)
	}
	t.Logf("%s: %s", h.Name, strings.Join(strings.Fields(out), " "))
}

// echoVIP asks h's agent for the echo service's address: a VIP on h.
func (c *Cluster) echoVIP(ctx context.Context, h *Host) string {
	c.t.Helper()
	return c.serviceVIP(ctx, h, "echo", echoPort)
}

// serviceVIP returns the VIP and port of service on h, as its agent's DNS
// answers them.
func (c *Cluster) serviceVIP(ctx context.Context, h *Host, service string, port int) string {
	t := c.t
	t.Helper()
	out, err := h.pollSSH(ctx, "dig +short +time=2 +tries=2 @127.0.0.1 -p 8600 "+service+".service.mesh A", 30*time.Second, func(out string) bool {
		a, err := netip.ParseAddr(strings.TrimSpace(out))
		return err == nil && a.IsLoopback()
	})
	if err != nil {
		t.Fatalf("%s: %s.service.mesh is not a VIP: %v", h.Name, service, err)
	}
	return fmt.Sprintf("%s:%d", strings.TrimSpace(out), port)
}

// underLoad runs restartload on h against vip, runs action once the load
// has started, then lets the load go on for 1,000 more requests (2 s) and
// returns its report.
func (c *Cluster) underLoad(ctx context.Context, h *Host, vip string, action func()) loadReport {
	l := c.startRestartLoad(ctx, h, vip)
	action()
	return l.finish()
}

// runningLoad is restartload running on a host.
type runningLoad struct {
	h      *Host
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout bytes.Buffer
	errOut strings.Builder
	read   chan struct{} // closed when stderr is read to its end
}

// startRestartLoad starts restartload on h against vip and returns once the load
// runs; flags are added to its command line (the name to query, a longer
// -max-duration).
func (c *Cluster) startRestartLoad(ctx context.Context, h *Host, vip string, flags ...string) *runningLoad {
	t := c.t
	t.Helper()
	command := strings.Join(append([]string{"restartload load -addr " + vip + " -rate 500 -dns-rate 200 -long 4 -tail 1000"}, flags...), " ")
	l := &runningLoad{h: h, read: make(chan struct{})}
	l.cmd = exec.CommandContext(ctx, "ssh", append(c.sshArgs(), "root@"+h.IP, command)...)
	l.cmd.Stdout = &l.stdout
	var err error
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stderr, err := l.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		defer close(l.read)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if sc.Text() == "started" && !once {
				once = true
				close(started)
				continue
			}
			l.errOut.WriteString(sc.Text() + "\n")
		}
		if !once {
			close(started)
		}
	}()
	<-started
	return l
}

// finish marks the end of the action under test, lets the load go on for
// its tail and returns its report.
func (l *runningLoad) finish() loadReport {
	t := l.h.c.t
	t.Helper()
	io.WriteString(l.stdin, "mark\n")
	l.stdin.Close()
	<-l.read
	if err := l.cmd.Wait(); err != nil {
		t.Fatalf("%s: restartload: %v\n%s", l.h.Name, err, l.errOut.String())
	}
	var rep loadReport
	if err := json.Unmarshal(l.stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%s: restartload report %q: %v\n%s", l.h.Name, l.stdout.String(), err, l.errOut.String())
	}
	return rep
}

// restartAgent restarts h's agent with systemctl, and checks that the old
// one stopped as for a restart and the new one was handed its sockets by
// systemd.
func restartAgent(ctx context.Context, h *Host) {
	t := h.c.t
	t.Helper()
	since := strings.TrimSpace(h.SSH("date +%s.%N"))
	start := time.Now()
	h.SSH("systemctl restart meshwork.service")
	took := time.Since(start)
	log := h.SSH("journalctl --no-pager -o cat -u meshwork.service --since @" + since)
	for _, want := range []string{"systemd restarts the agent", `msg="listening sockets handed over" from=systemd`} {
		if !strings.Contains(log, want) {
			t.Errorf("%s: the journal of the restart does not show %q:\n%s", h.Name, want, log)
		}
	}
	t.Logf("%s: systemctl restart took %v; the journal:\n%s", h.Name, took.Round(time.Millisecond), grepLines(log,
		"asked systemd", "systemd restarts", "tunnel drained", "drain ended", "agent stopped", "handed over", "agent started", "Stopped", "Started", "listener", "tunnel listening", "gossip in contact"))
}

// upgradeAgent returns the action that replaces h's binary and upgrades
// its agent in place, and checks that the new process is the unit's main
// process, runs version, and that the unit never stopped. It records the
// new main process in upgraded.
func upgradeAgent(version string, upgraded map[*Host]upgradedAgent) func(context.Context, *Host) {
	return func(ctx context.Context, h *Host) {
		t := h.c.t
		t.Helper()
		before := parseProps(h.SSH("systemctl show -p MainPID,NRestarts,InvocationID meshwork.service"))
		oldPID := before["MainPID"]
		since := strings.TrimSpace(h.SSH("date +%s.%N"))
		start := time.Now()
		h.SSH("install -m 0755 /usr/local/bin/meshwork.next /usr/local/bin/meshwork && systemctl kill --kill-whom=main --signal=SIGUSR2 meshwork.service")
		out, err := h.pollSSH(ctx, "systemctl show -p MainPID,NRestarts,InvocationID,ActiveState,SubState meshwork.service; kill -0 "+oldPID+" 2>/dev/null && echo OldAlive=yes || echo OldAlive=no",
			time.Minute, func(out string) bool {
				p := parseProps(out)
				return p["MainPID"] != oldPID && p["MainPID"] != "0" && p["OldAlive"] == "no" && p["SubState"] == "running"
			})
		took := time.Since(start)
		log := h.SSH("journalctl --no-pager -o cat -u meshwork.service --since @" + since)
		if err != nil {
			t.Fatalf("%s: the upgrade in place did not complete: %v\n%s", h.Name, err, log)
		}
		after := parseProps(out)
		upgraded[h] = upgradedAgent{pid: after["MainPID"], at: monotonic(t)}
		if after["NRestarts"] != before["NRestarts"] || after["InvocationID"] != before["InvocationID"] || after["ActiveState"] != "active" {
			t.Errorf("%s: the unit restarted during the upgrade in place: before %v, after %v", h.Name, before, after)
		}
		if !strings.Contains(log, "version="+version) {
			t.Errorf("%s: the new agent does not run version %s:\n%s", h.Name, version, log)
		}
		if strings.Contains(log, "reception only permitted for main PID") {
			t.Errorf("%s: systemd refused a notification across the handover:\n%s", h.Name, log)
		}
		t.Logf("%s: upgrade in place: main PID %s, then %s, in %v (until the old process was gone); the journal:\n%s", h.Name, oldPID, after["MainPID"], took.Round(time.Millisecond),
			grepLines(log, "upgrade", "agent started", "agent stopped", "watchdog", "MAINPID", "main PID", "listener", "tunnel listening", "gossip in contact"))
	}
}

// countLines returns each distinct line of s with its count.
func countLines(s string) string {
	counts := map[string]int{}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		if counts[line] == 0 {
			order = append(order, line)
		}
		counts[line]++
	}
	var out []string
	for _, line := range order {
		out = append(out, fmt.Sprintf("%6d × %s", counts[line], line))
	}
	return strings.Join(out, "\n")
}

// grepLines returns the lines of log that contain any of words.
func grepLines(log string, words ...string) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
