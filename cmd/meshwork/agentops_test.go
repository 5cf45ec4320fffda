package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentOpsProcess runs the real binaries: an agent logging at warn,
// `meshwork monitor --log-level debug` following it (it sees the info and
// debug lines the agent's own log leaves out, and ends with status 0 on
// SIGINT), `members --detailed`, a force-leave the agent refuses for a
// live node (exit 1), and `meshwork leave`, after which the agent exits
// with status 0 on its own.
func TestAgentOpsProcess(t *testing.T) {
	bin := meshworkBinary(t)
	ip := loopbackAddr()
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.yaml")
	writeConf(t, conf, fmt.Sprintf("dev: true\nnode: ops\nbind: %s\nlog_level: warn\naddresses: {http: %s, dns: %s}\nports: {tunnel: -1}\ntunnel: {vip_range: 127.237.0.0/16}\n", ip, ip, ip))
	sock, notes := notifySocket(t)
	_, stderr, exited := startAgentProcess(t, bin, sock, "--config", conf, "--data-dir", filepath.Join(dir, "data"))
	expectNotify(t, notes, "READY=1")
	addr := ip + ":8500"

	// The monitor, at debug.
	mon := exec.Command(bin, "monitor", "--log-level", "debug", "--http-addr", addr)
	out, err := mon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var monErr strings.Builder
	mon.Stderr = &monErr
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // the test reads only what it waits for
			}
		}
		close(lines)
	}()
	monExited := make(chan error, 1)
	go func() { monExited <- mon.Wait() }()
	t.Cleanup(func() {
		_ = mon.Process.Kill()
		<-monExited
	})

	// Something to log at info, and at debug (every API request): the
	// monitor may start after the first request, so ask until it shows.
	svc := writeFile(t, "web.yaml", "name: web\nport: 8080\n")
	seen := map[string]bool{}
	deadline := time.After(time.Minute)
	for !seen["info"] || !seen["debug"] {
		if o, code := runBinary(t, bin, nil, "services", "register", svc, "--http-addr", addr); code != 0 {
			t.Fatalf("services register: exit %d\n%s", code, o)
		}
		wait := time.After(2 * time.Second)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the monitor ended: %v", monErr.String())
				}
				if strings.Contains(l, "level=INFO") && strings.Contains(l, `msg="service registered"`) {
					seen["info"] = true
				}
				if strings.Contains(l, "level=DEBUG") && strings.Contains(l, `msg="http request"`) {
					seen["debug"] = true
				}
				if seen["info"] && seen["debug"] {
					break read
				}
			case <-wait:
				break read
			case <-deadline:
				t.Fatalf("the monitor showed %v of the info and debug lines", seen)
			}
		}
	}
	if stderr.Contains("service registered") {
		t.Error("the agent's own log, at warn, has an info line: the monitor's level leaked into it")
	}
	if err := mon.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-monExited:
		monExited <- err
		if err != nil {
			t.Errorf("monitor exited with %v on SIGINT, want status 0; stderr: %s", err, monErr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("monitor did not exit on SIGINT")
	}

	if o, code := runBinary(t, bin, nil, "members", "--detailed", "--http-addr", addr, "--timeout", "5s"); code != 0 ||
		!regexpLine(o, "NODE", "GOSSIP", "TUNNEL", "STATUS", "ROLE", "SERVICES", "RECORD", "META") || !regexpLine(o, "ops", ip+":7946", "-", "alive", "server", "1") {
		t.Errorf("members --detailed: exit %d\n%s", code, o)
	}
	if o, code := runBinary(t, bin, nil, "force-leave", "ops", "--http-addr", addr); code != exitFailed || !strings.Contains(o, "only for a failed node") || !strings.Contains(o, "HTTP 409") {
		t.Errorf("force-leave of the live agent itself: exit %d\n%s", code, o)
	}

	if o, code := runBinary(t, bin, nil, "leave", "--http-addr", addr); code != 0 || !strings.Contains(o, "left the cluster") {
		t.Fatalf("leave: exit %d\n%s", code, o)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("the agent exited with %v after leave, want status 0", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the agent did not stop after leave")
	}
}
