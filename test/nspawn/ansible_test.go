//go:build e2e

package nspawn

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Recap is one host's line of Ansible's PLAY RECAP.
type Recap struct {
	OK, Changed, Unreachable, Failed, Skipped int
}

var recapLine = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)`)

// parseRecap reads the PLAY RECAP of a playbook's output.
func parseRecap(out string) map[string]Recap {
	m := map[string]Recap{}
	for _, g := range recapLine.FindAllStringSubmatch(out, -1) {
		n := func(i int) int { v, _ := strconv.Atoi(g[i]); return v }
		m[g[1]] = Recap{OK: n(2), Changed: n(3), Unreachable: n(4), Failed: n(5), Skipped: n(6)}
	}
	return m
}

// writeInventory writes the scenario's Ansible inventory: the first three
// hosts are servers, the rest clients; services and hostVars are per-host
// variables.
func (c *Cluster) writeInventory(services map[string][]map[string]any, hostVars map[string]map[string]any) string {
	t := c.t
	t.Helper()
	servers, clients := map[string]map[string]any{}, map[string]map[string]any{}
	for i, h := range c.hosts {
		v := map[string]any{"ansible_host": h.IP, "meshwork_advertise": h.IP, "meshwork_bind": h.IP}
		if s := services[h.Name]; s != nil {
			v["meshwork_services"] = s
		}
		for k, x := range hostVars[h.Name] {
			v[k] = x
		}
		if i < 3 {
			servers[h.Name] = v
		} else {
			clients[h.Name] = v
		}
	}
	inv := map[string]any{"all": map[string]any{
		"vars": map[string]any{
			"ansible_user":                 "root",
			"ansible_ssh_private_key_file": c.sshKey,
			"ansible_ssh_common_args":      strings.Join(c.sshArgs()[2:], " "),
			"meshwork_health_timeout":      180,
			// Both clients in one batch: clients hold no Raft vote.
			"meshwork_client_serial": 2,
			// Calls between services are allowed unless an Intention says
			// otherwise, so that the data plane check needs no policy.
			"meshwork_config_extra": map[string]any{"tunnel": map[string]any{"default_policy": "allow"}},
		},
		"children": map[string]any{
			"servers": map[string]any{"hosts": servers},
			"clients": map[string]any{"hosts": clients},
		},
	}}
	// JSON is YAML; Ansible reads it as a YAML inventory.
	data, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(c.work, "inventory.yml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// installRole packs the role as a release would (make role), installs the
// tarball with ansible-galaxy into a roles path of its own, and copies the
// playbooks beside an ansible.cfg that names only that path: the playbooks
// run from there, away from the repository's roles/ directory, with the
// installed copy of the role.
func (c *Cluster) installRole(repo string) {
	t := c.t
	t.Helper()
	out := filepath.Join(c.work, "role-dist")
	mk := exec.Command("make", "--no-print-directory", "role", "VERSION=0.0.0-e2e", "ROLE_OUT="+out)
	mk.Dir = repo
	if b, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make role: %v\n%s", err, b)
	}
	tarball := filepath.Join(out, "meshwork-role-0.0.0-e2e.tar.gz")
	c.playDir = filepath.Join(c.work, "playbooks")
	roles := filepath.Join(c.work, "roles")
	for _, d := range []string{c.playDir, roles} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	galaxy := exec.Command("ansible-galaxy", "role", "install", "-p", roles, tarball+",,meshwork")
	galaxy.Dir = c.playDir
	galaxy.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "HOME="+c.work)
	if b, err := galaxy.CombinedOutput(); err != nil {
		t.Fatalf("ansible-galaxy role install %s: %v\n%s", tarball, err, b)
	}
	for _, f := range []string{"meta/main.yml", "files/meshwork.service", "tasks/rotate_gossip_key.yml", "README.md"} {
		if fi, err := os.Lstat(filepath.Join(roles, "meshwork", f)); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("the installed role lacks %s as a regular file: %v", f, err)
		}
	}
	cfg := fmt.Sprintf("[defaults]\nroles_path = %s\ninterpreter_python = auto_silent\nforks = 10\n\n[ssh_connection]\npipelining = True\n", roles)
	if err := os.WriteFile(filepath.Join(c.playDir, "ansible.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"site.yml", "rotate-gossip-key.yml", "rotate-ca-root.yml", "rotate-cluster-key.yml"} {
		b, err := os.ReadFile(filepath.Join(repo, "ansible", p))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c.playDir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("role packed into %s and installed with ansible-galaxy into %s", filepath.Base(tarball), roles)
}

// playbook runs site.yml against the cluster with the given extra
// variables (written to a file, never on the command line) and returns the
// combined output and the recap.
func (c *Cluster) playbook(ctx context.Context, repo, inventory string, vars map[string]any, args ...string) (string, map[string]Recap, error) {
	c.t.Helper()
	return c.runPlaybook(ctx, "site.yml", inventory, vars, args...)
}

// runPlaybook runs one of the playbooks installRole copied, with the
// installed role.
func (c *Cluster) runPlaybook(ctx context.Context, playbook, inventory string, vars map[string]any, args ...string) (string, map[string]Recap, error) {
	t := c.t
	t.Helper()
	data, err := json.Marshal(vars)
	if err != nil {
		t.Fatal(err)
	}
	varsFile := filepath.Join(c.work, "extra-vars.json")
	if err := os.WriteFile(varsFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := c.playDir
	cmdArgs := append([]string{"-i", inventory, "-e", "@" + varsFile}, args...)
	cmdArgs = append(cmdArgs, playbook)
	cmd := exec.CommandContext(ctx, "ansible-playbook", cmdArgs...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+filepath.Join(dir, "ansible.cfg"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		// Per-task timings at the end of the output, for docs/benchmarks.md.
		"ANSIBLE_CALLBACKS_ENABLED=profile_tasks",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(c.work, "ansible-tmp"),
		"ANSIBLE_SSH_ARGS=-o ControlMaster=auto -o ControlPersist=30s -o ControlPath="+filepath.Join(c.work, "cp-%C"),
	)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	c.playbookOut = append(c.playbookOut, string(out))
	t.Logf("ansible-playbook %s %s: %s; slowest tasks:\n%s", playbook, strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond), slowestTasks(string(out), 8))
	if err != nil {
		err = fmt.Errorf("ansible-playbook: %w", err)
	}
	return string(out), parseRecap(string(out)), err
}

// slowestTasks returns the first n lines of profile_tasks' summary, which
// lists tasks slowest first.
func slowestTasks(out string, n int) string {
	i := strings.LastIndex(out, "===============")
	if i < 0 {
		return "(no task profile)"
	}
	lines := strings.Split(strings.TrimSpace(out[i:]), "\n")[1:]
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

var taskHeader = regexp.MustCompile(`(?m)^(TASK|RUNNING HANDLER) \[(.*?)\] \*+$`)
var hostResult = regexp.MustCompile(`(?m)^(ok|changed|skipping|failed|fatal): \[([^\]]+)\]`)

// taskResults returns, for the task named name, each host's result (ok,
// changed, skipping, failed or fatal) in a playbook's output.
func taskResults(out, name string) map[string]string {
	res := map[string]string{}
	heads := taskHeader.FindAllStringSubmatchIndex(out, -1)
	for i, h := range heads {
		if out[h[4]:h[5]] != name {
			continue
		}
		end := len(out)
		if i+1 < len(heads) {
			end = heads[i+1][0]
		}
		for _, m := range hostResult.FindAllStringSubmatch(out[h[1]:end], -1) {
			res[m[2]] = m[1]
		}
	}
	return res
}
