//go:build e2e

package nspawn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshwork/meshwork/acl"
)

// hostCount hosts boot: three servers and two clients. The first client
// (webHost) has the binary and offers web; the second (debHost) is
// installed from the release's .deb and offers api.
const (
	hostCount = 5
	webHost   = 3
	debHost   = 4
)

// Paths the role installs on the hosts.
const (
	// meshworkBin is found on root's PATH: /usr/local/bin where the role
	// installs the binary, /usr/bin where the package does.
	meshworkBin = "meshwork"
	// installedBin is where the role installs the binary
	// (meshwork_binary_path).
	installedBin = "/usr/local/bin/meshwork"
	// packagedBin is where the .deb installs it.
	packagedBin = "/usr/bin/meshwork"
	// agentTokenFile holds every host's own ACL token.
	agentTokenFile = "/etc/meshwork/agent-token"
	// managementTokenFile holds the management token, on servers only.
	managementTokenFile = "/etc/meshwork/management-token"
)

// cli returns the shell command that runs the meshwork CLI on a host with
// args, sending the token of tokenFile (a file on that host) when ACLs are
// on; with tokenFile "", the call is anonymous.
func (c *Cluster) cli(tokenFile, args string) string {
	if !c.acl || tokenFile == "" {
		return meshworkBin + " " + args
	}
	return "MESHWORK_HTTP_TOKEN_FILE=" + tokenFile + " " + meshworkBin + " " + args
}

// Timings records how long each phase of the scenario took; the figures go to
// docs/benchmarks.md, never into an assertion.
type Timings struct {
	mu     sync.Mutex
	start  time.Time
	phases []string
}

// Phase starts timing a phase; call the returned func when it ends.
func (tm *Timings) Phase(name string) func() {
	begin := time.Now()
	return func() {
		tm.mu.Lock()
		defer tm.mu.Unlock()
		tm.phases = append(tm.phases, fmt.Sprintf("%-34s %7.1fs", name, time.Since(begin).Seconds()))
	}
}

func (tm *Timings) String() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return strings.Join(tm.phases, "\n") + fmt.Sprintf("\n%-34s %7.1fs", "total", time.Since(tm.start).Seconds())
}

// member is the part of `meshwork members --format json` the scenario reads.
type member struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Status string `json:"status"`
	Server bool   `json:"server"`
}

func newKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// buildBinary builds cmd/meshwork with the given version string.
func buildBinary(t *testing.T, repo, out, version string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", out, "./cmd/meshwork")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build meshwork %s: %v\n%s", version, err, b)
	}
}

// binaryVersion returns the last word of `meshwork --version`.
func binaryVersion(t *testing.T, path string) string {
	t.Helper()
	f := strings.Fields(run(t, path, "--version"))
	if len(f) == 0 {
		t.Fatalf("%s --version printed nothing", path)
	}
	return f[len(f)-1]
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("booted hosts need root (systemd-nspawn, bridges, overlay mounts)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run scripts/deps.sh e2e", tool)
		}
	}
}

// TestBootedHosts boots Debian hosts under systemd-nspawn, packs the role
// into a tarball and installs it with ansible-galaxy, rolls Meshwork out
// with that copy of the role over SSH (one client from the release's .deb),
// and checks the service, the mesh, DNS through systemd-resolved, reload, a
// rolling upgrade, idempotency, and the gossip key and CA root rotation
// playbooks under load.
func TestBootedHosts(t *testing.T) {
	requireTools(t, "systemd-nspawn", "debootstrap", "ansible-playbook", "ssh", "ssh-keygen", "ip")
	tm := &Timings{start: time.Now()}
	t.Cleanup(func() { t.Logf("timings:\n%s", tm) })
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// Leave time for teardown before go test's own timeout, which would skip
	// every cleanup.
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-3*time.Minute))
		defer cancel()
	}

	end := tm.Phase("build binaries v1, v2, probe")
	bin := t.TempDir()
	v1, v2 := os.Getenv("MESHWORK_E2E_BIN_V1"), os.Getenv("MESHWORK_E2E_BIN_V2")
	var ver1, ver2 string
	if v1 != "" && v2 != "" {
		// Prebuilt binaries, such as release artifacts: their versions must differ.
		ver1, ver2 = binaryVersion(t, v1), binaryVersion(t, v2)
		if ver1 == ver2 {
			t.Fatalf("MESHWORK_E2E_BIN_V1 and _V2 are both version %s", ver1)
		}
	} else {
		v1, v2 = filepath.Join(bin, "v1", "meshwork"), filepath.Join(bin, "v2", "meshwork")
		stamp := time.Now().UTC().Format("20060102T150405")
		ver1, ver2 = "e2e-1-"+stamp, "e2e-2-"+stamp
		buildBinary(t, repo, v1, ver1)
		buildBinary(t, repo, v2, ver2)
	}
	probe, loader := filepath.Join(bin, "sandboxprobe"), filepath.Join(bin, "restartload")
	for out, pkg := range map[string]string{probe: "./test/nspawn/sandboxprobe", loader: "./test/nspawn/restartload"} {
		build := exec.Command("go", "build", "-tags", "e2e", "-o", out, pkg)
		build.Dir, build.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	end()

	// Two packages, the first installed and the second the upgrade, at
	// versions that sort in that order for dpkg and for semver.
	end = tm.Phase("release .deb v1, v2 (scripts/release.sh)")
	debStamp := "0.0.0-e2e." + time.Now().UTC().Format("20060102T150405")
	deb, debVersion := buildDeb(t, repo, filepath.Join(bin, "release", "v1"), "MESHWORK_E2E_DEB", debStamp+".1")
	deb2, debVersion2 := buildDeb(t, repo, filepath.Join(bin, "release", "v2"), "MESHWORK_E2E_DEB_V2", debStamp+".2")
	end()

	end = tm.Phase("rootfs (debootstrap or cache)")
	rootfs := strings.TrimSpace(run(t, filepath.Join(repo, "scripts/nspawn/rootfs.sh")))
	end()

	lockScenario(t)
	cleanStale(t)
	c := newCluster(t, rootfs, tm)
	c.installRole(repo)

	end = tm.Phase(fmt.Sprintf("boot %d hosts to sshd", hostCount))
	for i := 1; i <= hostCount; i++ {
		c.Boot(fmt.Sprintf("%s%d", hostPrefix, i), i)
	}
	for _, h := range c.hosts {
		h.WaitSSH(2 * time.Minute)
	}
	end()

	web, debClient := c.hosts[webHost], c.hosts[debHost]
	// The packaged client also runs an echo service (restartload serve)
	// that the web client calls during the rolling upgrade.
	services := map[string][]map[string]any{
		web.Name: {{"name": "web", "id": "web-1", "port": 8080, "tags": []string{"v1"}}},
		debClient.Name: {{"name": "api", "id": "api-1", "port": 8081, "tags": []string{"v1"}},
			{"name": "echo-deb", "id": "echo-deb-1", "port": echoPort}},
	}
	debVars := map[string]map[string]any{debClient.Name: {"meshwork_install_method": "deb", "meshwork_deb_src": deb}}
	inv := c.writeInventory(services, debVars)
	// The services themselves: plain HTTP servers on the clients' loopback,
	// which only the mesh can reach from the other hosts.
	for _, svc := range []struct {
		h          *Host
		name, port string
	}{{web, "web", "8080"}, {debClient, "api", "8081"}} {
		svc.h.SSH(fmt.Sprintf("mkdir -p /srv/%[1]s && echo meshwork-e2e-%[1]s > /srv/%[1]s/index.html && "+
			"systemd-run --unit=%[1]s-e2e --property=WorkingDirectory=/srv/%[1]s python3 -m http.server %[2]s --bind 127.0.0.1", svc.name, svc.port))
		svc.h.CopyTo(loader, "/usr/local/bin/restartload", 0o755)
	}
	debClient.SSH(fmt.Sprintf("systemd-run --unit=e2e-echo /usr/local/bin/restartload serve -listen 127.0.0.1:%d", echoPort))
	// The version each host runs: the package's on debClient.
	versionOf := func(h *Host, binary string) string {
		if h == debClient {
			return debVersion
		}
		return binary
	}
	secrets := map[string]string{
		"meshwork_encrypt":     newKey(t),
		"meshwork_cluster_key": newKey(t),
	}
	// The servers share the key that seals the CA's private keys; the role
	// writes it on servers only.
	secrets["meshwork_ca_state_key"] = newKey(t)
	vars := map[string]any{"meshwork_binary_src": v1}
	for k, v := range secrets {
		vars[k] = v
	}
	// The role turns ACLs on, deny by default, and needs the management
	// token for the servers; a v1 binary from before ACLs cannot run them.
	if exec.Command(v1, "acl", "secret").Run() == nil {
		c.acl = true
		secret, err := acl.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		secrets["meshwork_acl_management_token"] = secret
		vars["meshwork_acl_management_token"] = secret
	} else {
		vars["meshwork_acl_enabled"] = false
		t.Logf("SKIPPED ACLs: %s has no `acl` command", ver1)
	}
	// Only servers hold the server key; a v1 binary from before it refuses
	// the key as unknown.
	if serverKeyKnown(t, v1) {
		c.serverKey = true
		secrets["meshwork_server_key"] = newKey(t)
		vars["meshwork_server_key"] = secrets["meshwork_server_key"]
	} else {
		t.Logf("SKIPPED server key: %s does not know server_key", ver1)
	}
	// The role's health check waits for a Raft leader by default; a v1
	// binary from before `operator raft list-peers` cannot run it.
	raftCheck := true
	if help, err := exec.Command(v1, "operator", "raft", "list-peers", "--help").Output(); err != nil || !strings.Contains(string(help), "list-peers") {
		raftCheck = false
		vars["meshwork_health_check_raft"] = false
		t.Logf("SKIPPED Raft leader health check: %s has no `operator raft list-peers`", ver1)
	}
	noSecrets := func(what, out string) {
		t.Helper()
		for k, v := range secrets {
			if strings.Contains(out, v) {
				t.Errorf("%s: the value of %s appears in the output", what, k)
			}
		}
	}
	requireRun := func(what, out string, recap map[string]Recap, err error, hosts int) {
		t.Helper()
		noSecrets(what, out)
		if err != nil || len(recap) != hosts {
			t.Fatalf("%s: %v; recap %v\n%s", what, err, recap, out)
		}
		for host, r := range recap {
			if r.Failed != 0 || r.Unreachable != 0 {
				t.Fatalf("%s: %s: %+v\n%s", what, host, r, out)
			}
		}
	}

	// 1. Install, servers first: a run limited to them, then one over every
	// host, both verbose and with diffs, so that a leak of a secret through
	// either would show. Between the two the servers may start serving the
	// CA; if they do, the second run gives each client a bootstrap token.
	end = tm.Phase("playbook: install v1, servers")
	out, recap, err := c.playbook(ctx, repo, inv, vars, "--diff", "-v", "--limit", "servers")
	end()
	requireRun("install servers", out, recap, err, 3)
	for host, r := range recap {
		if r.Changed == 0 {
			t.Errorf("install: %s reports changed=0 on a fresh host", host)
		}
	}
	if raftCheck {
		// A fresh cluster gets its leader when the third server joins: the
		// first two skip the check, the third waits for the leader.
		got := taskResults(out, "meshwork : Wait until Raft has a leader")
		want := map[string]string{"mw-nsp-1": "skipping", "mw-nsp-2": "skipping", "mw-nsp-3": "ok"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("install: Raft leader check results %v, want %v", got, want)
		}
	}
	// The CA roots are public: no token.
	_, caErr := c.hosts[0].SSHContext(ctx, c.cli("", "ca roots"))
	if caErr == nil {
		vars["meshwork_ca_token_generate"] = true
	} else {
		t.Logf("SKIPPED CA bootstrap: the servers serve no CA (%v)", caErr)
	}
	end = tm.Phase("playbook: install v1, all hosts")
	out, recap, err = c.playbook(ctx, repo, inv, vars, "--diff", "-v")
	end()
	requireRun("install", out, recap, err, hostCount)
	for _, h := range c.hosts {
		r := recap[h.Name]
		if server := slices.Contains(c.hosts[:3], h); server && r.Changed != 0 {
			t.Errorf("install: server %s changed again (changed=%d)", h.Name, r.Changed)
		} else if !server && r.Changed == 0 {
			t.Errorf("install: %s reports changed=0 on a fresh host", h.Name)
		}
	}
	if c.acl {
		c.checkACL(ctx)
	}
	if c.serverKey {
		c.checkServerKey(ctx)
	}
	if caErr == nil {
		c.checkClientCerts(ctx, out, services, secrets["meshwork_acl_management_token"])
	}

	end = tm.Phase("checks after install")
	for _, h := range c.hosts {
		c.checkService(h, versionOf(h, ver1))
	}
	c.checkDebHost(debClient, debVersion)
	for _, h := range c.hosts {
		c.waitMembers(ctx, h, hostCount)
	}
	c.checkDNS(ctx, services)
	c.checkDataPlane(ctx)
	// The client installed from the package serves, through its tunnel.
	c.checkCall(ctx, web, "http://api.service.mesh:8081/", "meshwork-e2e-api")
	c.checkUnitOnHost(c.hosts[0])
	c.checkSandbox(c.hosts[1], probe)
	c.checkReload(ctx, c.hosts[0])
	end()

	// 2. Rolling upgrade to v2, watched from two hosts that each restart in
	// their turn, so that one of them always sees the mesh: the binary on
	// three servers and one client, the next package on the other client.
	// One client after the other, as the servers: a connection between two
	// agents that restart at the same moment is not carried over
	// (docs/restart.md).
	vars["meshwork_binary_src"] = v2
	vars["meshwork_client_serial"] = 1
	debVars[debClient.Name]["meshwork_deb_src"] = deb2
	inv = c.writeInventory(services, debVars)
	debPID := parseProps(debClient.SSH("systemctl show -p MainPID meshwork.service"))["MainPID"]
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchers := []*watcher{c.watchMembers(watchCtx, c.hosts[0]), c.watchMembers(watchCtx, web)}
	// Under load (issue 29): the web client calls the packaged client's
	// echo service at 500 new connections a second and asks its agent's
	// DNS 200 times a second, while every agent is upgraded in place in
	// turn, the calling one's and the called one's among them. No
	// request may fail (the sockets outlive the agents, and each agent
	// hands the connections it carries to its successor), and every
	// long-lived connection survives; the waits are logged.
	load := c.startRestartLoad(ctx, web, c.serviceVIP(ctx, web, "echo-deb", echoPort),
		"-name", "echo-deb.service.mesh.", "-max-duration", "15m")
	upgradeSince := strings.TrimSpace(web.SSH("date +%s.%N"))
	end = tm.Phase("playbook: rolling upgrade to v2, under load")
	out, recap, err = c.playbook(ctx, repo, inv, vars)
	end()
	stopWatch()
	rep := load.finish()
	t.Logf("rolling upgrade under load: %d requests (%d ok; %d reset, %d other), longest wait of a new connection %.0f ms (p50 %.1f ms, p99 %.1f ms, %d over 1 s); "+
		"DNS %d sent, %d answered (%d not NOERROR), longest %.0f ms; long-lived connections surviving: %d of %d; first failures at %q: %q",
		rep.Requests, rep.OK, rep.Reset, rep.Other, rep.MaxWaitMS, rep.P50MS, rep.P99MS, rep.Over1s,
		rep.DNSSent, rep.DNSAnswered, rep.DNSNotNoError, rep.DNSMaxMS, rep.LongSurvived, rep.Long, rep.FailedAt, rep.Errors)
	if rep.Requests == 0 || rep.OK != rep.Requests {
		t.Errorf("rolling upgrade under load: %d of %d requests failed (%d refused, %d reset, %d timed out, %d other): %q",
			rep.Requests-rep.OK, rep.Requests, rep.Refused, rep.Reset, rep.TimedOut, rep.Other, rep.Errors)
	}
	if rep.Long == 0 || rep.LongSurvived != rep.Long {
		t.Errorf("rolling upgrade under load: %d of %d long-lived connections survived: %q", rep.LongSurvived, rep.Long, rep.LongErrors)
	}
	if t.Failed() {
		// The journals of the caller's and the instance's agents during the
		// upgrade, without the debug lines: the hosts' own dump at the end
		// shows only their last lines.
		for _, h := range []*Host{web, debClient} {
			t.Logf("%s: meshwork journal during the upgrade:\n%s", h.Name,
				h.SSH("journalctl --no-pager -o short-precise -u meshwork.service --since @"+upgradeSince+" | grep -v 'level=DEBUG' | tail -n 150"))
		}
	}
	requireRun("upgrade", out, recap, err, hostCount)
	upgradeOut := out
	c.checkRollingOrder(c.hosts, func(h *Host) (string, string) {
		if h == debClient {
			return debVersion2, packagedBin
		}
		return ver2, installedBin
	})
	for _, w := range watchers {
		w.check(t, hostCount)
	}
	c.checkDebUpgraded(out, debClient, debPID, debVersion2)
	vars["meshwork_client_serial"] = 2

	// 3. Nothing left to do but the packaged client's services, which
	// changed: that reloads its agent instead of restarting it.
	services[debClient.Name][0]["tags"] = []string{"v2"}
	inv = c.writeInventory(services, debVars)
	pids := c.mainPIDs()
	debPID = parseProps(debClient.SSH("systemctl show -p MainPID meshwork.service"))["MainPID"]
	end = tm.Phase("playbook: rerun, one host's services changed")
	out, recap, err = c.playbook(ctx, repo, inv, vars)
	end()
	requireRun("rerun", out, recap, err, hostCount)
	for host, r := range recap {
		want := 0
		if host == debClient.Name {
			want = 2 // the services file, and the reload it notified
		}
		if r.Changed != want {
			t.Errorf("rerun: %s reports changed=%d, want %d\n%s", host, r.Changed, want, out)
		}
	}
	c.checkServicesReloaded(ctx, out, debClient, debPID)
	if after := c.mainPIDs(); fmt.Sprint(after) != fmt.Sprint(pids) {
		t.Errorf("rerun restarted agents: main PIDs %v, then %v", pids, after)
	}
	for _, h := range c.hosts {
		c.waitMembers(ctx, h, hostCount)
	}
	if raftCheck {
		// During the upgrade every server restarted; each waited for a leader.
		got := taskResults(upgradeOut, "meshwork : Wait until Raft has a leader")
		for _, h := range c.hosts[:3] {
			if got[h.Name] != "ok" {
				t.Errorf("upgrade: Raft leader check on %s: %q, want ok", h.Name, got[h.Name])
			}
		}
	}

	// 4. A configuration the agent would refuse never reaches the host, and
	// the running agent is left alone.
	bad := map[string]any{}
	for k, v := range vars {
		bad[k] = v
	}
	bad["meshwork_log_level"] = "verbose"
	client := web
	pids = c.mainPIDs()
	end = tm.Phase("playbook: refused config")
	out, recap, err = c.playbook(ctx, repo, inv, bad, "--limit", client.Name)
	end()
	noSecrets("refused config", out)
	if err == nil || recap[client.Name].Failed != 1 {
		t.Errorf("a playbook with log_level verbose succeeded (%v, %+v)\n%s", err, recap[client.Name], out)
	}
	if r := taskResults(out, "meshwork : Render the agent configuration")[client.Name]; r != "failed" && r != "fatal" {
		t.Errorf("the config template's validate did not refuse log_level verbose (result %q)\n%s", r, out)
	}
	if !strings.Contains(out, "log_level") {
		t.Errorf("the refusal does not name the key log_level:\n%s", out)
	}
	if got := client.SSH("grep -c verbose /etc/meshwork/meshwork.yaml || true"); strings.TrimSpace(got) != "0" {
		t.Errorf("the refused configuration reached /etc/meshwork/meshwork.yaml")
	}
	if after := c.mainPIDs(); fmt.Sprint(after) != fmt.Sprint(pids) {
		t.Errorf("a refused configuration restarted agents: main PIDs %v, then %v", pids, after)
	}
	c.checkService(client, ver2)

	// 5. Stopping an agent that carries a connection waits for it, beyond
	// the unit's TimeoutStopSec.
	end = tm.Phase("stop during a call")
	c.checkStopWaitsForDrain(ctx, c.hosts[1])
	end()

	// 6. The gossip key and the CA root rotate under load, with no failed
	// call, and with the installed role's playbooks.
	c.checkRotations(ctx, inv, vars, secrets, requireRun, tm)

	// No run printed a token the role made on a host.
	if c.acl {
		all := strings.Join(c.playbookOut, "\n")
		for _, h := range c.hosts {
			if tok := strings.TrimSpace(h.SSH("cat " + agentTokenFile)); tok == "" || strings.Contains(all, tok) {
				t.Errorf("%s: agent token empty, or printed by a playbook run", h.Name)
			}
		}
	}
}

// serverKeyKnown reports whether bin knows the server_key setting: it
// validates a server's configuration that holds one.
func serverKeyKnown(t *testing.T, bin string) bool {
	t.Helper()
	f := filepath.Join(t.TempDir(), "server.yaml")
	conf := fmt.Sprintf("node: probe\ndata_dir: /tmp/probe\nadvertise: 10.0.0.1\nserver: true\nbootstrap_expect: 1\ncluster_key: %q\nserver_key: %q\n", newKey(t), newKey(t))
	if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return exec.Command(bin, "validate", f).Run() == nil
}

// checkServerKey checks that the role gave the server key to the servers
// and to no client: no server warns that it cannot tell a server from an
// agent, and the client's secrets hold no server_key.
func (c *Cluster) checkServerKey(ctx context.Context) {
	t := c.t
	t.Helper()
	for i, h := range c.hosts {
		has := strings.TrimSpace(h.SSH("grep -c '^server_key:' /etc/meshwork/secrets.yaml || true"))
		if server := i < 3; server && has != "1" || !server && has != "0" {
			t.Errorf("%s: secrets.yaml holds server_key %s times", h.Name, has)
		}
		if i < 3 {
			warned := strings.TrimSpace(h.SSH("journalctl -u meshwork --no-pager | grep -c 'cannot tell a server from any agent' || true"))
			if warned != "0" {
				t.Errorf("%s: the server warned %s times that it cannot tell a server from an agent", h.Name, warned)
			}
		}
	}
	t.Logf("server key: on the 3 servers, on no client; no server warned")
}

// checkACL checks what the role set up for ACLs: each host's agent token in
// a 0640 root:meshwork file, known to the cluster with the policy the role
// made for it; the management token on the servers alone, 0600 root; and
// deny by default: a call without a token is refused where the same call
// with the management token goes through, and the catalog stays open to
// read without one.
func (c *Cluster) checkACL(ctx context.Context) {
	t := c.t
	t.Helper()
	for i, h := range c.hosts {
		if got := strings.TrimSpace(h.SSH("stat -c '%a %U:%G' " + agentTokenFile)); got != "640 root:meshwork" {
			t.Errorf("%s: %s is %s, want 640 root:meshwork", h.Name, agentTokenFile, got)
		}
		mgmt, err := h.SSHContext(ctx, "stat -c '%a %U:%G' "+managementTokenFile)
		if server := i < 3; server && strings.TrimSpace(mgmt) != "600 root:root" {
			t.Errorf("%s: %s is %q (%v), want 600 root:root", h.Name, managementTokenFile, strings.TrimSpace(mgmt), err)
		} else if !server && err == nil {
			t.Errorf("%s: a client holds the management token", h.Name)
		}
		var self struct {
			AccessorID string `json:"accessor_id"`
			Policies   []struct {
				Name string `json:"name"`
			} `json:"policies"`
		}
		// A restarted agent may take a moment to have the ACLs again.
		_, err = h.pollSSH(ctx, c.cli(agentTokenFile, "acl token self --format json"), 30*time.Second, func(out string) bool {
			return json.Unmarshal([]byte(out), &self) == nil
		})
		want := "agent-" + h.Name
		if err != nil || len(self.Policies) != 1 || self.Policies[0].Name != want {
			t.Errorf("%s: its agent token has policies %+v (%v), want %s", h.Name, self.Policies, err, want)
			continue
		}
		t.Logf("%s: agent token %s with policy %s", h.Name, self.AccessorID, want)
	}
	s := c.hosts[0]
	out, err := s.SSHContext(ctx, c.cli("", "operator raft list-peers"))
	if err == nil || !strings.Contains(err.Error(), "permission denied: token lacks operator:read on \"raft\"") {
		t.Errorf("%s: operator raft list-peers without a token: %q, %v; want a refusal", s.Name, out, err)
	} else {
		t.Logf("%s: without a token: %s", s.Name, err.Error()[strings.LastIndex(err.Error(), ": meshwork: ")+2:])
	}
	if _, err := s.SSHContext(ctx, c.cli(managementTokenFile, "operator raft list-peers")); err != nil {
		t.Errorf("%s: operator raft list-peers with the management token: %v", s.Name, err)
	}
	client := c.hosts[webHost]
	if out, err := client.SSHContext(ctx, c.cli("", "catalog service web --format json")); err != nil || !strings.Contains(out, client.Name) {
		t.Errorf("%s: catalog service web without a token: %q, %v; want web on %s", client.Name, out, err, client.Name)
	}
}

// slowCall connects to web through its VIP and holds the connection until
// the file named by its argument exists, then makes one HTTP/1.0 request
// and prints the body.
const slowCall = `import os, socket, sys, time
s = socket.create_connection(("web.service.mesh", 8080), timeout=120)
deadline = time.monotonic() + 120
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.1)
s.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
print(data.split(b"\r\n\r\n", 1)[-1].decode().strip())
`

// checkStopWaitsForDrain stops h's agent while a call through its VIP is in
// flight, under a drop-in that cuts TimeoutStopSec to 2s. The call is let go
// only once the stop has lasted longer than that, with the agent still
// draining. The agent asks systemd for the time its leave and drain need
// (EXTEND_TIMEOUT_USEC), so systemd has not killed it: the call completes
// and the unit stops cleanly. Without the extension, systemd kills the
// agent after 2s, and the call fails. The agent is started again afterwards.
func (c *Cluster) checkStopWaitsForDrain(ctx context.Context, h *Host) {
	t := c.t
	t.Helper()
	const stopLimit = 2 * time.Second
	dropIn := "/etc/systemd/system/meshwork.service.d/50-e2e-stop.conf"
	release := "/tmp/slowcall.release"
	h.SSH(fmt.Sprintf("mkdir -p %s && printf '[Service]\\nTimeoutStopSec=%s\\n' > %s && systemctl daemon-reload && rm -f %s && cat > /tmp/slowcall.py <<'EOF'\n%sEOF",
		filepath.Dir(dropIn), stopLimit, dropIn, release, slowCall))
	defer func() {
		h.SSH("rm -f " + dropIn + " /tmp/slowcall.py " + release + " && systemctl daemon-reload && systemctl start meshwork.service")
		for _, other := range c.hosts {
			c.waitMembers(ctx, other, hostCount)
		}
	}()
	if got := parseProps(h.SSH("systemctl show -p TimeoutStopUSec meshwork.service"))["TimeoutStopUSec"]; got != stopLimit.String() {
		t.Fatalf("%s: the drop-in did not take: TimeoutStopUSec=%s", h.Name, got)
	}

	var callOut bytes.Buffer
	call := exec.CommandContext(ctx, "ssh", append(c.sshArgs(), "root@"+h.IP, "python3 /tmp/slowcall.py "+release)...)
	call.Stdout, call.Stderr = &callOut, &callOut
	if err := call.Start(); err != nil {
		t.Fatal(err)
	}
	callDone := make(chan error, 1)
	go func() { callDone <- call.Wait() }()
	defer h.SSH("touch " + release) // however this ends, the call ends
	var status struct {
		InFlight int `json:"in_flight"`
	}
	if _, err := h.pollSSH(ctx, c.cli(managementTokenFile, "tunnel status --format json"), 30*time.Second, func(out string) bool {
		return json.Unmarshal([]byte(out), &status) == nil && status.InFlight > 0
	}); err != nil {
		t.Fatalf("%s: the slow call never showed in flight: %v", h.Name, err)
	}

	since := strings.TrimSpace(h.SSH("date +%s.%N"))
	stopped := make(chan error, 1)
	go func() {
		out, err := h.SSHContext(ctx, "systemctl stop meshwork.service")
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, out)
		}
		stopped <- err
	}()
	// The containers share this machine's monotonic clock, in which systemd
	// stamps the unit's state changes.
	if _, err := h.pollSSH(ctx, "systemctl show -p ActiveState,StatusText,StateChangeTimestampMonotonic meshwork.service", 30*time.Second, func(out string) bool {
		p := parseProps(out)
		at, err := strconv.ParseInt(p["StateChangeTimestampMonotonic"], 10, 64)
		return err == nil && p["ActiveState"] == "deactivating" && p["StatusText"] == "draining the tunnel" &&
			monotonic(t)-time.Duration(at)*time.Microsecond > stopLimit
	}); err != nil {
		t.Errorf("%s: the agent was not still draining %v into its stop: %v", h.Name, stopLimit, err)
	}
	h.SSH("touch " + release)
	if err := <-stopped; err != nil {
		t.Errorf("%s: systemctl stop: %v", h.Name, err)
	}
	err := <-callDone
	if got := strings.TrimSpace(callOut.String()); err != nil || got != "meshwork-e2e-web" {
		t.Errorf("%s: the call in flight when the agent stopped: %v, output %q; want it to complete", h.Name, err, got)
	}
	props := parseProps(h.SSH("systemctl show -p Result,ActiveState meshwork.service"))
	log := h.SSH("journalctl --no-pager -o cat -u meshwork.service --since @" + since)
	if props["Result"] != "success" || props["ActiveState"] != "inactive" {
		t.Errorf("%s: after the stop, meshwork.service %v; want inactive with Result=success (not killed at TimeoutStopSec)\n%s", h.Name, props, log)
	}
	if !strings.Contains(log, "tunnel drained") {
		t.Errorf("%s: the stopping agent did not log that its tunnel drained:\n%s", h.Name, log)
	}
}

// monotonic reads CLOCK_MONOTONIC, the clock of systemd's *Monotonic
// timestamps.
func monotonic(t *testing.T) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// checkClientCerts asserts every client has a certificate for its node
// identity and, with ACLs on, for each of its services, which the servers
// name only because the client's agent token may write them; and that no
// token the role handled reached the output. Reading the leaf takes the
// management token, which clients do not hold: it goes on the command's
// standard input.
func (c *Cluster) checkClientCerts(ctx context.Context, out string, services map[string][]map[string]any, mgmt string) {
	t := c.t
	t.Helper()
	for _, h := range c.hosts[3:] {
		token := strings.TrimSpace(h.SSH("cat /etc/meshwork/ca-token"))
		if token == "" || strings.Contains(out, token) {
			t.Errorf("%s: CA token empty, or printed by the playbook", h.Name)
		}
		want := []string{"/node/" + h.Name}
		if c.acl {
			for _, s := range services[h.Name] {
				want = append(want, "/svc/"+s["name"].(string))
			}
		}
		command, input := c.cli("", "ca cert --format json"), ""
		if c.acl {
			command, input = command+" --token-file /dev/stdin", mgmt
		}
		var leaf struct {
			IDs []string `json:"ids"`
		}
		_, err := h.pollSSHInput(ctx, command, input, time.Minute, func(out string) bool {
			leaf.IDs = nil // not an earlier attempt's
			if json.Unmarshal([]byte(out), &leaf) != nil || len(leaf.IDs) == 0 || !strings.HasSuffix(leaf.IDs[0], want[0]) {
				return false
			}
			for _, w := range want[1:] {
				if !slices.ContainsFunc(leaf.IDs, func(id string) bool { return strings.HasSuffix(id, w) }) {
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Errorf("%s: no certificate for %v after the bootstrap token: %v", h.Name, want, err)
			continue
		}
		t.Logf("%s: certificate for %v", h.Name, leaf.IDs)
	}
}

// pollSSH runs command on h every second until ok accepts its output, and
// returns that output; after limit, it returns the last output and error.
func (h *Host) pollSSH(ctx context.Context, command string, limit time.Duration, ok func(out string) bool) (string, error) {
	return h.pollSSHInput(ctx, command, "", limit, ok)
}

// pollSSHInput is pollSSH with input on the command's standard input.
func (h *Host) pollSSHInput(ctx context.Context, command, input string, limit time.Duration, ok func(out string) bool) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		out, err := h.SSHInput(ctx, command, input)
		if err == nil && ok(out) {
			return out, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", errors.New(fmt.Sprint(out, err))
		}
		waitOrDone(ctx.Done(), time.Second)
	}
}

// checkService asserts the unit is active and running under systemd. With
// Type=notify, systemd holds the unit in "activating" until READY=1 arrives,
// so active/running proves the handshake.
func (c *Cluster) checkService(h *Host, version string) {
	t := c.t
	t.Helper()
	props := parseProps(h.SSH("systemctl show -p ActiveState,SubState,Type,NRestarts,StatusText,MainPID meshwork.service"))
	if props["ActiveState"] != "active" || props["SubState"] != "running" || props["Type"] != "notify" || props["NRestarts"] != "0" {
		t.Errorf("%s: meshwork.service %v, want active/running, Type=notify, no restarts\n%s", h.Name, props,
			h.SSH("journalctl -u meshwork.service --no-pager -n 30 || true"))
	}
	t.Logf("%s: meshwork.service %s/%s, status %q", h.Name, props["ActiveState"], props["SubState"], props["StatusText"])
	if got := h.SSH(meshworkBin + " --version"); !strings.Contains(got, version) {
		t.Errorf("%s: meshwork --version = %q, want %s", h.Name, strings.TrimSpace(got), version)
	}
}

func parseProps(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// members returns the host's view of the mesh, read with its agent's token
// (which reads every node).
func (h *Host) members(ctx context.Context) ([]member, error) {
	out, err := h.SSHContext(ctx, h.c.cli(agentTokenFile, "members --format json"))
	if err != nil {
		return nil, err
	}
	var ms []member
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return nil, fmt.Errorf("%s: members: %w: %q", h.Name, err, out)
	}
	return ms, nil
}

// waitMembers polls until the host sees every host of the cluster alive.
func (c *Cluster) waitMembers(ctx context.Context, h *Host, want int) {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ms, err := h.members(ctx)
		alive := map[string]bool{}
		for _, m := range ms {
			if m.Status == "alive" {
				alive[m.Name] = true
			}
		}
		all := err == nil
		for _, o := range c.hosts {
			all = all && alive[o.Name]
		}
		if all && len(ms) == want {
			return
		}
		last = fmt.Sprint(ms, err)
		waitOrDone(ctx.Done(), time.Second)
	}
	t.Fatalf("%s: members never showed all %d hosts alive; last: %s", h.Name, want, last)
}

// checkDNS resolves a service registered on one host from the others, through
// systemd-resolved (the drop-in the role installs) and from the agent
// directly. It is skipped, and says so, when the agent serves no DNS.
func (c *Cluster) checkDNS(ctx context.Context, services map[string][]map[string]any) {
	t := c.t
	t.Helper()
	probe := c.hosts[0]
	if _, err := probe.SSHContext(ctx, "dig +time=2 +tries=2 @127.0.0.1 -p 8600 "+probe.Name+".node.mesh | grep -q 'status: '"); err != nil {
		t.Logf("SKIPPED DNS check: the agent answers no DNS on 127.0.0.1:8600 (%v)", err)
		return
	}
	owner := c.hosts[webHost]
	for _, h := range c.hosts {
		if h == owner {
			continue
		}
		// A node name has one predictable answer: its address.
		got := c.pollResolve(ctx, h, owner.Name+".node.mesh")
		if got != owner.IP {
			t.Errorf("%s: resolvectl %s.node.mesh = %s, want %s", h.Name, owner.Name, got, owner.IP)
		}
		// A service name answers with an address to connect to (a VIP on
		// this host, or the instance).
		if a, err := netip.ParseAddr(c.pollResolve(ctx, h, "web.service.mesh")); err != nil || !a.Is4() {
			t.Errorf("%s: web.service.mesh did not resolve to an IPv4 address: %v", h.Name, err)
		}
		direct, err := h.SSHContext(ctx, "dig +short +time=2 +tries=2 @127.0.0.1 -p 8600 web.service.mesh A")
		if err != nil || strings.TrimSpace(direct) == "" {
			t.Errorf("%s: dig @127.0.0.1 -p 8600 web.service.mesh: %q %v", h.Name, direct, err)
		}
		t.Logf("%s: through systemd-resolved %s.node.mesh = %s; from the agent web.service.mesh = %s",
			h.Name, owner.Name, got, strings.Join(strings.Fields(direct), " "))
	}
}

// checkDataPlane fetches the web client's page from every other host by
// name, as an application would: systemd-resolved, the agent's VIP, a QUIC
// tunnel to the client's agent, its loopback. This runs the data plane
// inside the unit's sandbox.
func (c *Cluster) checkDataPlane(ctx context.Context) {
	t := c.t
	t.Helper()
	vip, err := c.hosts[0].SSHContext(ctx, "dig +short +time=2 +tries=2 @127.0.0.1 -p 8600 web.service.mesh A")
	if a, perr := netip.ParseAddr(strings.TrimSpace(vip)); err != nil || perr != nil || !a.IsLoopback() {
		t.Errorf("web.service.mesh answers %q, not a VIP (%v)", strings.TrimSpace(vip), err)
		return
	}
	for _, h := range c.hosts {
		if h != c.hosts[webHost] {
			c.checkCall(ctx, h, "http://web.service.mesh:8080/", "meshwork-e2e-web")
		}
	}
}

// checkCall fetches url from h until it answers want, for up to 30s.
func (c *Cluster) checkCall(ctx context.Context, h *Host, url, want string) {
	t := c.t
	t.Helper()
	fetch := fmt.Sprintf(`python3 -c "import urllib.request; print(urllib.request.urlopen('%s', timeout=5).read().decode().strip())"`, url)
	got, err := h.pollSSH(ctx, fetch, 30*time.Second, func(out string) bool {
		return strings.TrimSpace(out) == want
	})
	if err != nil {
		t.Errorf("%s: %s through the mesh: %v", h.Name, url, err)
		return
	}
	t.Logf("%s: %s through the mesh: %q", h.Name, url, strings.TrimSpace(got))
}

var resolvectlAddr = regexp.MustCompile(`(?m)^\S+: (\d+\.\d+\.\d+\.\d+)`)

// pollResolve asks systemd-resolved for name until it answers with an IPv4
// address, and returns the first one.
func (c *Cluster) pollResolve(ctx context.Context, h *Host, name string) string {
	t := c.t
	t.Helper()
	out, err := h.pollSSH(ctx, "resolvectl query --cache=no -4 "+name, 30*time.Second, resolvectlAddr.MatchString)
	if err != nil {
		t.Errorf("%s: resolvectl query %s: %v", h.Name, name, err)
		return ""
	}
	return resolvectlAddr.FindStringSubmatch(out)[1]
}

var exposure = regexp.MustCompile(`Overall exposure level for meshwork.service: (\d+\.\d+)`)

// checkUnitOnHost verifies the installed unit with the host's own systemd and
// records its exposure score.
func (c *Cluster) checkUnitOnHost(h *Host) {
	t := c.t
	t.Helper()
	if out, err := h.SSHContext(context.Background(), "systemd-analyze verify /etc/systemd/system/meshwork.service 2>&1"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("%s: systemd-analyze verify: %v\n%s", h.Name, err, out)
	}
	out := h.SSH("systemd-analyze security --no-pager meshwork.service 2>&1 || true")
	m := exposure.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no exposure level in systemd-analyze security:\n%s", h.Name, out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("%s: systemd-analyze security meshwork.service: exposure %.1f", h.Name, score)
	if score > 2.5 {
		t.Errorf("%s: exposure %.1f, want <= 2.5\n%s", h.Name, score, out)
	}
}

// checkSandbox runs sandboxprobe as a copy of the installed unit, ExecStart
// aside, and connects to it as another user.
func (c *Cluster) checkSandbox(h *Host, probe string) {
	t := c.t
	t.Helper()
	h.CopyTo(probe, "/usr/local/bin/meshwork-sandboxprobe", 0o755)
	h.SSH(`sed -e 's|^ExecStart=.*|ExecStart=/usr/local/bin/meshwork-sandboxprobe -listen 127.77.0.1:80|' -e '/^ExecReload=/d' ` +
		`/etc/systemd/system/meshwork.service > /etc/systemd/system/meshwork-sandboxprobe.service && systemctl daemon-reload`)
	t.Cleanup(func() {
		h.SSHContext(context.Background(), "systemctl stop meshwork-sandboxprobe.service; rm -f /etc/systemd/system/meshwork-sandboxprobe.service /usr/local/bin/meshwork-sandboxprobe; systemctl daemon-reload")
	})
	if out, err := h.SSHContext(context.Background(), "systemctl start meshwork-sandboxprobe.service"); err != nil {
		t.Fatalf("sandbox probe did not start: %v\n%s", err, h.SSH("journalctl -u meshwork-sandboxprobe --no-pager -n 20 || true")+out)
	}
	got := strings.TrimSpace(h.SSH(`runuser -u nobody -- python3 -c "import socket; s = socket.create_connection(('127.77.0.1', 80)); print(s.makefile().readline())"`))
	t.Logf("%s: sandbox probe: %s", h.Name, got)
	for _, want := range []string{"uid=65534 ", "state_write=ok", "etc_write=denied"} {
		if !strings.Contains(got+" ", want) {
			t.Errorf("%s: sandbox probe said %q, want %q: the agent's sandbox blocks what it needs, or allows what it must not", h.Name, got, want)
		}
	}
}

// checkReload reloads the agent and reads in the manager's debug log that the
// agent answered with RELOADING=1 (with MONOTONIC_USEC) and then READY=1,
// without a restart.
func (c *Cluster) checkReload(ctx context.Context, h *Host) {
	t := c.t
	t.Helper()
	pid := parseProps(h.SSH("systemctl show -p MainPID meshwork.service"))["MainPID"]
	since := strings.TrimSpace(h.SSH("date +%s.%N"))
	h.SSH("systemd-analyze log-level debug")
	defer h.SSH("systemd-analyze log-level info")
	h.SSH("systemctl reload meshwork.service")
	reloading := fmt.Sprintf("Got notification message from PID %s (RELOADING=1, MONOTONIC_USEC=", pid)
	ready := fmt.Sprintf("Got notification message from PID %s (READY=1", pid)
	deadline := time.Now().Add(30 * time.Second)
	var log string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		log = h.SSH("journalctl --no-pager -o cat -u meshwork.service --since @" + since)
		if i := strings.Index(log, reloading); i >= 0 && strings.Contains(log[i:], ready) {
			props := parseProps(h.SSH("systemctl show -p MainPID,ActiveState,SubState meshwork.service"))
			if props["ActiveState"] == "active" && props["SubState"] == "running" {
				if props["MainPID"] != pid {
					t.Errorf("%s: reload restarted the agent: pid %s, then %s", h.Name, pid, props["MainPID"])
				}
				return
			}
		}
		waitOrDone(ctx.Done(), 500*time.Millisecond)
	}
	t.Errorf("%s: after systemctl reload, no RELOADING=1 then READY=1 from pid %s in the manager's log:\n%s", h.Name, pid, log)
}

// mainPIDs returns each host's agent PID.
func (c *Cluster) mainPIDs() []string {
	var pids []string
	for _, h := range c.hosts {
		pids = append(pids, h.Name+"="+parseProps(h.SSH("systemctl show -p MainPID meshwork.service"))["MainPID"])
	}
	return pids
}

// checkRollingOrder asserts every host runs the new version from the
// binary want names for it, and that the agents were restarted one after
// another, in inventory order.
func (c *Cluster) checkRollingOrder(hosts []*Host, want func(*Host) (version, bin string)) {
	t := c.t
	t.Helper()
	var prev float64
	for _, h := range hosts {
		version, bin := want(h)
		c.checkService(h, version)
		// The upgrade in place keeps the unit active: the agent's main
		// process is new, started from the binary now on disk (not the one
		// it replaced, which /proc shows as deleted). Its start time, in
		// clock ticks since boot, orders the hosts: the containers share
		// the host's kernel.
		out := strings.TrimSpace(h.SSH(`pid=$(systemctl show -p MainPID --value meshwork.service) && echo "$(cut -d' ' -f22 /proc/$pid/stat) $(readlink /proc/$pid/exe)"`))
		ticks, exe, _ := strings.Cut(out, " ")
		at, err := strconv.ParseFloat(ticks, 64)
		if err != nil {
			t.Fatalf("%s: the main process's start time %q: %v", h.Name, out, err)
		}
		if exe != bin {
			t.Errorf("%s: the agent runs %q, not the binary installed at %s", h.Name, exe, bin)
		}
		if at <= prev {
			t.Errorf("%s's agent started at tick %.0f, not after the host before it (%.0f): the rollout was not serial", h.Name, at, prev)
		}
		prev = at
	}
}

// watcher samples one host's member list during a rolling upgrade.
type watcher struct {
	host    string
	done    chan struct{}
	samples [][]member
}

func (c *Cluster) watchMembers(ctx context.Context, h *Host) *watcher {
	w := &watcher{host: h.Name, done: make(chan struct{})}
	// One sample every half second, at most 20 minutes' worth; the loop ends
	// with the SSH session. While the host's own agent restarts, the sample
	// is an error line and is skipped.
	script := `for i in $(seq 1 2400); do ` + c.cli(agentTokenFile, "members --format json") + ` 2>/dev/null | tr -d '\n'; echo; sleep 0.5; done`
	args := append(c.sshArgs(), "root@"+h.IP, script)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ms []member
			if json.Unmarshal(sc.Bytes(), &ms) == nil && len(ms) > 0 {
				w.samples = append(w.samples, ms)
			}
		}
		cmd.Wait()
	}()
	return w
}

// check asserts the mesh stayed whole in every sample: every host listed,
// and at most one (the one being upgraded) not alive. Samples in which the
// watcher's own agent, just restarted, knows only itself are skipped. How the restarting
// host was reported is logged: a graceful leave shows "left"; a restart
// that is quicker than gossip's news of the leave can show it "suspect" or
// briefly "failed" on some peers until the new process refutes it.
func (w *watcher) check(t *testing.T, want int) {
	t.Helper()
	<-w.done
	if len(w.samples) == 0 {
		t.Errorf("watcher on %s: no samples", w.host)
		return
	}
	bad, joining := 0, 0
	seen := map[string]int{}
	for i, ms := range w.samples {
		if len(ms) == 1 && ms[0].Name == w.host {
			// The watcher's own agent has just restarted and not yet
			// joined: it knows only itself. The other watcher covers this
			// moment.
			joining++
			continue
		}
		var down []string
		for _, m := range ms {
			if m.Status != "alive" {
				down = append(down, m.Name+"="+m.Status)
				seen[m.Status]++
			}
		}
		if len(ms) != want || len(down) > 1 {
			bad++
			t.Errorf("watcher on %s, sample %d: %d members, not alive: %v; want %d members, at most one not alive", w.host, i, len(ms), down, want)
		}
	}
	if bad == 0 {
		t.Logf("watcher on %s: %d samples during the upgrade, mesh whole in each but %d taken while its own agent was joining; the restarting host was seen %v", w.host, len(w.samples), joining, seen)
	}
}
