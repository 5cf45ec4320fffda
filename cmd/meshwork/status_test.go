package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/testnet"
)

// TestStatusAndWatchdogProcess runs the real binaries. A --dev agent under
// a fake systemd with WatchdogSec= (WATCHDOG_USEC) sends WATCHDOG=1 from
// its main loop after READY=1, again and again; `meshwork status` says it
// is ready, check by check, with status 0. A client agent that has joined
// nothing is not ready: status 1, and the reasons, in text and in JSON.
func TestStatusAndWatchdogProcess(t *testing.T) {
	bin := meshworkBinary(t)
	t.Setenv("WATCHDOG_USEC", "300000") // 0.3s: a ping every 0.15s
	t.Setenv("WATCHDOG_PID", "")

	ip := loopbackAddr()
	dir := t.TempDir()
	conf := filepath.Join(dir, "dev.yaml")
	writeConf(t, conf, fmt.Sprintf("dev: true\nnode: st\nbind: %s\naddresses: {http: %s, dns: %s}\nports: {tunnel: -1}\ntunnel: {vip_range: 127.236.0.0/16}\n", ip, ip, ip))
	sock, notes := notifySocket(t)
	_, stderr, _ := startAgentProcess(t, bin, sock, "--config", conf, "--data-dir", filepath.Join(dir, "dev"))
	expectNotify(t, notes, "READY=1")
	for range 3 {
		if msg := expectNotify(t, notes, "WATCHDOG=1"); msg != "WATCHDOG=1\n" {
			t.Errorf("watchdog ping %q, want WATCHDOG=1 alone", msg)
		}
	}
	if !strings.Contains(stderr.String(), "systemd watchdog on") {
		t.Errorf("the agent does not log that the watchdog is on:\n%s", stderr.String())
	}

	var out string
	testnet.Eventually(t, time.Minute, "meshwork status to say the dev agent is ready", func() error {
		var code int
		out, code = runBinary(t, bin, nil, "status", "--http-addr", ip+":8500")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})
	for _, want := range []string{"ready: yes", "gossip", "a cluster of its own", "certificate", "valid until", "policy", "policy loaded"} {
		if !strings.Contains(out, want) {
			t.Errorf("meshwork status lacks %q:\n%s", want, out)
		}
	}

	// A client alone: not joined, no catalog, no certificate, no policy.
	cip := loopbackAddr()
	cconf := filepath.Join(dir, "client.yaml")
	writeConf(t, cconf, fmt.Sprintf("node: lonely\nbind: %s\nadvertise: %s\naddresses: {http: %s, dns: %s}\nports: {tunnel: -1}\ncluster_key: %q\n",
		cip, cip, cip, cip, config.NewKey()))
	csock, cnotes := notifySocket(t)
	startAgentProcess(t, bin, csock, "--config", cconf, "--data-dir", filepath.Join(dir, "client"))
	expectNotify(t, cnotes, "READY=1")
	out, code := runBinary(t, bin, nil, "status", "--http-addr", cip+":8500")
	if code != 1 || !strings.Contains(out, "ready: no") || !strings.Contains(out, "not joined") || !strings.Contains(out, "no catalog restored") || !strings.Contains(out, "no certificate") || !strings.Contains(out, "no policy yet") {
		t.Errorf("meshwork status on a lone client: exit %d, want 1 with the reasons:\n%s", code, out)
	}
	out, code = runBinary(t, bin, nil, "status", "--format", "json", "--http-addr", cip+":8500")
	var r api.Readiness
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 || r.Ready || len(r.Checks) != 4 {
		t.Errorf("meshwork status --format json on a lone client: exit %d, %+v (%v); want 1 and four checks\n%s", code, r, err, out)
	}
	for _, c := range r.Checks {
		if c.OK {
			t.Errorf("lone client: check %s passes: %s", c.Name, c.Reason)
		}
	}
	// An agent that cannot be reached is not ready either.
	if out, code := runBinary(t, bin, nil, "status", "--http-addr", closedAddr(t)); code != 1 || !strings.Contains(out, "unreachable") && !strings.Contains(out, "refused") {
		t.Errorf("meshwork status with no agent: exit %d, want 1 naming the problem:\n%s", code, out)
	}
}
