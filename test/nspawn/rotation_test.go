//go:build e2e

package nspawn

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// buildDeb builds the release's Debian package for amd64 at version with
// scripts/release.sh, or takes the one the environment variable env names,
// and returns its path and the version its binary reports.
func buildDeb(t testingT, repo, out, env, version string) (deb, binVersion string) {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		v, err := exec.Command("dpkg-deb", "--field", p, "Version").Output()
		if err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		// Debian writes a semver pre-release with ~ (release.sh).
		return p, strings.Replace(strings.TrimSpace(string(v)), "~", "-", 1)
	}
	cmd := exec.Command(filepath.Join(repo, "scripts/release.sh"))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "VERSION="+version, "OUT="+out, "ARCHES=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, b)
	}
	deb = filepath.Join(out, "meshwork_"+version+"_amd64.deb")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("scripts/release.sh made no %s: %v", filepath.Base(deb), err)
	}
	return deb, version
}

// testingT is the part of *testing.T the helpers here use.
type testingT interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkDebHost checks what the package put on a host the role installed
// with meshwork_install_method deb: the binary in /usr/bin, the packaged
// unit and no copy of the role's in /etc, the package installed.
func (c *Cluster) checkDebHost(h *Host, version string) {
	t := c.t
	t.Helper()
	props := parseProps(h.SSH("systemctl show -p FragmentPath,ExecStart meshwork.service"))
	// Debian's merged /usr: systemd may name the unit by /lib, a link to
	// /usr/lib.
	fragment := strings.TrimSpace(h.SSH("readlink -f " + props["FragmentPath"]))
	if fragment != "/usr/lib/systemd/system/meshwork.service" || !strings.Contains(props["ExecStart"], "path="+packagedBin+" ") {
		t.Errorf("%s: meshwork.service from %s, ExecStart %s; want the packaged unit running %s", h.Name, fragment, props["ExecStart"], packagedBin)
	}
	if out, err := h.SSHContext(context.Background(), "test ! -e /etc/systemd/system/meshwork.service && test ! -e /usr/local/bin/meshwork"); err != nil {
		t.Errorf("%s: the role's unit or binary is on a host installed from the package: %v %s", h.Name, err, out)
	}
	status := h.SSH("dpkg-query --showformat='${Status} ${Version}' --show meshwork")
	if !strings.HasPrefix(status, "install ok installed ") {
		t.Errorf("%s: dpkg: meshwork %q, want installed", h.Name, status)
	}
	if got := h.SSH(packagedBin + " --version"); !strings.Contains(got, version) {
		t.Errorf("%s: %s --version = %q, want %s", h.Name, packagedBin, strings.TrimSpace(got), version)
	}
	t.Logf("%s: installed from the package (%s): %s", h.Name, strings.TrimSpace(status), props["FragmentPath"])
}

// loadScript makes calls to a URL at a steady rate, each on a new
// connection (a new stream through the tunnel), until the stop file exists,
// the count is reached or the time is up, and prints a JSON summary. The
// rate, count and time bound every run.
const loadScript = `import json, os, sys, time, urllib.request
url, want, rate, count, limit, stop = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
calls, failed, errors = 0, 0, []
start = time.monotonic()
while calls < count and time.monotonic() - start < limit and not os.path.exists(stop):
    due = start + calls / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    calls += 1
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode().strip()
        if body != want:
            raise ValueError("body %r" % body)
    except Exception as e:
        failed += 1
        if len(errors) < 5:
            errors.append("%.1fs: %s" % (time.monotonic() - start, e))
print(json.dumps({"calls": calls, "failed": failed, "errors": errors, "seconds": time.monotonic() - start}))
`

// loadResult is loadScript's summary.
type loadResult struct {
	Calls   int      `json:"calls"`
	Failed  int      `json:"failed"`
	Errors  []string `json:"errors"`
	Seconds float64  `json:"seconds"`
}

// load is a bounded stream of calls from one host.
type load struct {
	host, url string
	stop      string // the file whose existence ends it
	done      chan struct{}
	res       loadResult
	err       error
}

// startLoad starts calls from h to url, which answers want, at rate per
// second, for at most count calls and limit.
func (c *Cluster) startLoad(ctx context.Context, h *Host, url, want string, rate float64, count int, limit time.Duration) *load {
	t := c.t
	t.Helper()
	l := &load{host: h.Name, url: url, stop: "/tmp/load.stop", done: make(chan struct{})}
	h.SSH("rm -f " + l.stop + " && cat > /tmp/load.py <<'EOF'\n" + loadScript + "EOF")
	// However the test ends, the calls end: a session still running holds
	// up the host's shutdown.
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = h.SSHContext(stopCtx, "touch "+l.stop)
	})
	cmd := exec.CommandContext(ctx, "ssh", append(c.sshArgs(), "root@"+h.IP,
		fmt.Sprintf("python3 /tmp/load.py %s %s %g %d %g %s", url, want, rate, count, limit.Seconds(), l.stop))...)
	go func() {
		defer close(l.done)
		out, err := cmd.Output()
		if err != nil {
			l.err = fmt.Errorf("%s: load: %w", h.Name, err)
			return
		}
		l.err = json.Unmarshal(out, &l.res)
	}()
	return l
}

// finish stops the load and returns its summary.
func (l *load) finish(h *Host) (loadResult, error) {
	_, _ = h.SSHContext(context.Background(), "touch "+l.stop)
	<-l.done
	return l.res, l.err
}

// gossipFingerprint is gossip.KeyFingerprint: the agent names keys by it.
func gossipFingerprint(t testingT, key string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatalf("gossip key: %v", err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// keyringList is `meshwork keyring list --format json`.
type keyringList struct {
	Keys        map[string]int    `json:"keys"`
	PrimaryKeys map[string]int    `json:"primary_keys"`
	NumNodes    int               `json:"num_nodes"`
	Errors      map[string]string `json:"errors"`
}

// checkGossipRotated asserts that every member holds the new key alone, as
// its primary, and that every host's keyring file and rendered encrypt are
// the new key.
func (c *Cluster) checkGossipRotated(ctx context.Context, oldKey, newKey string) {
	t := c.t
	t.Helper()
	fpNew := gossipFingerprint(t, newKey)
	var kl keyringList
	out := c.hosts[0].SSH(c.cli(managementTokenFile, "keyring list --format json"))
	if err := json.Unmarshal([]byte(out), &kl); err != nil {
		t.Fatalf("keyring list: %v: %q", err, out)
	}
	want := map[string]int{fpNew: len(c.hosts)}
	if kl.NumNodes != len(c.hosts) || fmt.Sprint(kl.Keys) != fmt.Sprint(want) || fmt.Sprint(kl.PrimaryKeys) != fmt.Sprint(want) || len(kl.Errors) != 0 {
		t.Errorf("after the rotation, keyring list: %+v; want %v installed and primary on all %d members", kl, want, len(c.hosts))
	}
	for _, h := range c.hosts {
		var ring []string
		if err := json.Unmarshal([]byte(h.SSH("cat /var/lib/meshwork/gossip/keyring.json")), &ring); err != nil || !slices.Equal(ring, []string{newKey}) {
			t.Errorf("%s: the keyring file is not the new key alone (%d keys, %v)", h.Name, len(ring), err)
		}
		secrets := h.SSH("cat /etc/meshwork/secrets.yaml")
		if !strings.Contains(secrets, fmt.Sprintf("encrypt: %q", newKey)) || strings.Contains(secrets, oldKey) {
			t.Errorf("%s: secrets.yaml does not render the new key as encrypt, or still holds the old one", h.Name)
		}
	}
	t.Logf("gossip key rotated: %s installed and primary on %d members, the old key removed; keyring files and encrypt in step", fpNew, kl.NumNodes)
}

// rootRef names a CA root.
type rootRef struct {
	Fingerprint string `json:"fingerprint"`
}

// caRoots is `meshwork ca roots --format json`.
type caRoots struct {
	Roots []struct {
		rootRef
		Active bool `json:"active"`
	} `json:"roots"`
	Rotation *struct {
		InProgress bool      `json:"in_progress"`
		Retired    []rootRef `json:"retired"`
	} `json:"rotation"`
}

// activeRoot reads the active root's fingerprint from a server.
func (c *Cluster) activeRoot(ctx context.Context) string {
	t := c.t
	t.Helper()
	var r caRoots
	out := c.hosts[0].SSH(c.cli("", "ca roots --format json"))
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("ca roots: %v: %q", err, out)
	}
	for _, root := range r.Roots {
		if root.Active {
			return root.Fingerprint
		}
	}
	t.Fatalf("ca roots: no active root: %q", out)
	return ""
}

// checkCARotated asserts that every agent's trust bundle holds one root,
// active and not the old one, and that the servers list the old one as
// retired, with no rotation in progress.
func (c *Cluster) checkCARotated(ctx context.Context, oldRoot string) {
	t := c.t
	t.Helper()
	var newRoot string
	for _, h := range c.hosts {
		var r caRoots
		out, err := h.pollSSH(ctx, c.cli("", "ca roots --format json"), 30*time.Second, func(out string) bool {
			r = caRoots{}
			return json.Unmarshal([]byte(out), &r) == nil && len(r.Roots) == 1 && r.Roots[0].Active && r.Roots[0].Fingerprint != oldRoot
		})
		if err != nil {
			t.Errorf("%s: the trust bundle is not one new active root: %v", h.Name, err)
			continue
		}
		if newRoot == "" {
			newRoot = r.Roots[0].Fingerprint
		} else if r.Roots[0].Fingerprint != newRoot {
			t.Errorf("%s: active root %s, another host has %s", h.Name, r.Roots[0].Fingerprint, newRoot)
		}
		if r.Rotation != nil {
			retired := slices.Contains(r.Rotation.Retired, rootRef{oldRoot})
			if r.Rotation.InProgress || !retired {
				t.Errorf("%s: rotation in progress %v, old root retired %v; want done and retired\n%s", h.Name, r.Rotation.InProgress, retired, out)
			}
		}
	}
	t.Logf("CA root rotated: %s active on every agent, %s retired", newRoot, oldRoot)
}

// checkDebUpgraded asserts that the run that brought h the next package
// upgraded its agent in place, as a new binary alone asks, and not with a
// restart: the packaged unit did not change.
func (c *Cluster) checkDebUpgraded(out string, h *Host, pidBefore, version string) {
	t := c.t
	t.Helper()
	if got := taskResults(out, "meshwork : Install the meshwork package")[h.Name]; got != "changed" {
		t.Errorf("%s: the package install: %q, want changed", h.Name, got)
	}
	if got := taskResults(out, "meshwork : Ask the agent to upgrade itself in place")[h.Name]; got != "changed" {
		t.Errorf("%s: the upgrade in place: %q, want changed", h.Name, got)
	}
	if got, ok := taskResults(out, "meshwork : Restart meshwork")[h.Name]; ok {
		t.Errorf("%s: the Restart meshwork handler ran (%s) for a package whose unit did not change", h.Name, got)
	}
	pid := parseProps(h.SSH("systemctl show -p MainPID meshwork.service"))["MainPID"]
	if pid == pidBefore {
		t.Errorf("%s: the agent's main process is still %s after the package upgrade", h.Name, pid)
	}
	c.checkDebHost(h, version)
	t.Logf("%s: package upgraded to %s in place (main PID %s, then %s)", h.Name, version, pidBefore, pid)
}

// checkServicesReloaded asserts that a run that changed only h's services
// reloaded its agent, without a restart, and that the catalog shows the
// new tag v2.
func (c *Cluster) checkServicesReloaded(ctx context.Context, out string, h *Host, pidBefore string) {
	t := c.t
	t.Helper()
	if got := taskResults(out, "meshwork : Render the services")[h.Name]; got != "changed" {
		t.Errorf("%s: services.yaml: %q, want changed", h.Name, got)
	}
	// The agent kept its PID and shows the new tag (below): it reloaded.
	// The handler's own line is logged when the output does not show it
	// under its name for h.
	if got := taskResults(out, "meshwork : Reload meshwork")[h.Name]; got != "changed" {
		t.Logf("%s: the Reload meshwork handler reads %q in the output; its lines:\n%s", h.Name, got, grepLines(out, "HANDLER", "Reload"))
	}
	if got, ok := taskResults(out, "meshwork : Restart meshwork")[h.Name]; ok {
		t.Errorf("%s: the Restart meshwork handler ran (%s) for a change of services alone", h.Name, got)
	}
	if pid := parseProps(h.SSH("systemctl show -p MainPID meshwork.service"))["MainPID"]; pid != pidBefore {
		t.Errorf("%s: a change of services restarted the agent: pid %s, then %s", h.Name, pidBefore, pid)
	}
	if _, err := c.hosts[0].pollSSH(ctx, c.cli("", "catalog service api --format json"), 30*time.Second, func(out string) bool {
		return strings.Contains(out, `"v2"`)
	}); err != nil {
		t.Errorf("the catalog never showed api with its new tag v2 after the reload: %v", err)
		return
	}
	t.Logf("%s: services changed; agent reloaded (pid %s kept), api tagged v2 in the catalog", h.Name, pidBefore)
}

// checkRotations runs the gossip key and CA root rotation playbooks while
// both clients call each other's service by name, 10 calls/s each way, and
// asserts that no call failed, no agent restarted, and both rotations
// completed. The role then refuses a vault that still holds the old gossip
// key; vars takes the new one, as the operator would. Then the cluster key
// rotates, phase by phase, with a Raft write and a call through the tunnel
// after each (agents restart: no load).
func (c *Cluster) checkRotations(ctx context.Context, inv string, vars map[string]any, secrets map[string]string,
	requireRun func(what, out string, recap map[string]Recap, err error, hosts int), tm *Timings) {
	t := c.t
	t.Helper()
	web, deb := c.hosts[webHost], c.hosts[debHost]
	oldKey := secrets["meshwork_encrypt"]
	newGossip := newKey(t)
	secrets["meshwork_gossip_key_new"] = newGossip
	oldRoot := c.activeRoot(ctx)
	pids := c.mainPIDs()

	// Bounded: at most 3000 calls or 5 minutes each, whichever comes first.
	loads := []struct {
		h *Host
		l *load
	}{
		{deb, c.startLoad(ctx, deb, "http://web.service.mesh:8080/", "meshwork-e2e-web", 10, 3000, 5*time.Minute)},
		{web, c.startLoad(ctx, web, "http://api.service.mesh:8081/", "meshwork-e2e-api", 10, 3000, 5*time.Minute)},
	}
	rot := map[string]any{"meshwork_gossip_key_new": newGossip}
	for k, v := range vars {
		rot[k] = v
	}
	end := tm.Phase("playbook: rotate gossip key, load")
	out, recap, err := c.runPlaybook(ctx, "rotate-gossip-key.yml", inv, rot)
	end()
	requireRun("rotate gossip key", out, recap, err, hostCount)
	end = tm.Phase("playbook: rotate CA root, load")
	out, recap, err = c.runPlaybook(ctx, "rotate-ca-root.yml", inv, vars)
	end()
	// Every step runs once, on the first server: the recap lists it alone.
	requireRun("rotate CA root", out, recap, err, 1)
	for _, x := range loads {
		res, err := x.l.finish(x.h)
		if err != nil {
			t.Errorf("%s: %v", x.h.Name, err)
			continue
		}
		if res.Calls == 0 || res.Failed != 0 {
			t.Errorf("%s: %d of %d calls to %s failed during the rotations: %v", x.h.Name, res.Failed, res.Calls, x.l.url, res.Errors)
		}
		t.Logf("%s: %d calls to %s in %.0fs during the rotations, %d failed", x.h.Name, res.Calls, x.l.url, res.Seconds, res.Failed)
	}
	if after := c.mainPIDs(); fmt.Sprint(after) != fmt.Sprint(pids) {
		t.Errorf("the rotations restarted agents: main PIDs %v, then %v", pids, after)
	}
	c.checkGossipRotated(ctx, oldKey, newGossip)
	c.checkCARotated(ctx, oldRoot)

	// The vault still holds the old key: the role stops before it changes
	// anything, and says why.
	out, recap, err = c.playbook(ctx, "", inv, vars, "--limit", web.Name)
	if r := taskResults(out, "meshwork : Check that the keyring on disk starts with meshwork_encrypt")[web.Name]; err == nil || recap[web.Name].Failed != 1 ||
		(r != "failed" && r != "fatal") || !strings.Contains(out, "has another primary key than meshwork_encrypt") {
		t.Errorf("site.yml with the old gossip key in the vault: %v, %+v, keyring check %q; want it stopped by the keyring check\n%s", err, recap[web.Name], r, out)
	}
	vars["meshwork_encrypt"] = newGossip

	// Vars that do not describe the cluster: the rotation stops on the
	// keyring on disk before it changes anything.
	wrong := map[string]any{"meshwork_gossip_key_old": newKey(t), "meshwork_gossip_key_new": newKey(t)}
	for k, v := range vars {
		if _, set := wrong[k]; !set {
			wrong[k] = v
		}
	}
	out, recap, err = c.runPlaybook(ctx, "rotate-gossip-key.yml", inv, wrong)
	if err == nil || recap[web.Name].Failed != 1 || !strings.Contains(out, "neither meshwork_gossip_key_old nor meshwork_gossip_key_new") ||
		strings.Contains(out, "Install the new key on every member] ***") {
		t.Errorf("rotate-gossip-key.yml with keys the cluster does not hold: %v, %+v; want a stop at the keyring check, before any keyring change\n%s", err, recap[web.Name], out)
	}
	var ring []string
	if json.Unmarshal([]byte(web.SSH("cat /var/lib/meshwork/gossip/keyring.json")), &ring) != nil || !slices.Equal(ring, []string{newGossip}) {
		t.Errorf("%s: a refused rotation changed the keyring file", web.Name)
	}

	newCluster := newKey(t)
	secrets["meshwork_cluster_key_new"] = newCluster
	ck := map[string]any{"meshwork_cluster_key_new": newCluster}
	for k, v := range vars {
		ck[k] = v
	}
	for i, phase := range []string{"accept", "switch", "drop"} {
		end := tm.Phase("playbook: rotate cluster key, " + phase)
		out, recap, err := c.runPlaybook(ctx, "rotate-cluster-key.yml", inv, ck, "--tags", phase)
		end()
		requireRun("rotate cluster key, "+phase, out, recap, err, hostCount)
		for _, h := range c.hosts {
			c.waitMembers(ctx, h, hostCount)
		}
		// A Raft write through the leader, and a call through the tunnel.
		policy := fmt.Sprintf(`{"name":"e2e-cluster-key-%d","description":"written after phase %s","rules":{"node_prefix":{"":"read"}}}`, i, phase)
		if _, err := c.hosts[0].SSHInput(ctx, c.cli(managementTokenFile, "acl policy create --file=-"), policy); err != nil {
			t.Errorf("after cluster key phase %s: a Raft write failed: %v", phase, err)
		}
		c.checkCall(ctx, deb, "http://web.service.mesh:8080/", "meshwork-e2e-web")
	}
	for _, h := range c.hosts {
		secretsFile := h.SSH("cat /etc/meshwork/secrets.yaml")
		if !strings.Contains(secretsFile, fmt.Sprintf("cluster_key: %q", newCluster)) || strings.Contains(secretsFile, "accept_cluster_keys") {
			t.Errorf("%s: after the cluster key rotation, secrets.yaml does not hold the new cluster key alone", h.Name)
		}
	}
	vars["meshwork_cluster_key"] = newCluster
	t.Logf("cluster key rotated in three rolling phases; a Raft write and a call worked after each")
}
