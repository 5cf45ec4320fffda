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

// inventory is the scenario's Ansible inventory: the first three hosts are
// servers, the rest clients; services are per-host variables.
func (c *Cluster) writeInventory(services map[string][]map[string]any) string {
	t := c.t
	t.Helper()
	type hostVars map[string]any
	servers, clients := map[string]hostVars{}, map[string]hostVars{}
	for i, h := range c.hosts {
		v := hostVars{"ansible_host": h.IP, "meshwork_advertise": h.IP, "meshwork_bind": h.IP}
		if s := services[h.Name]; s != nil {
			v["meshwork_services"] = s
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

// playbook runs ansible/site.yml against the cluster with the given extra
// variables (written to a file, never on the command line) and returns the
// combined output and the recap.
func (c *Cluster) playbook(ctx context.Context, repo, inventory string, vars map[string]any, args ...string) (string, map[string]Recap, error) {
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
	dir := filepath.Join(repo, "ansible")
	cmdArgs := append([]string{"-i", inventory, "-e", "@" + varsFile}, args...)
	cmdArgs = append(cmdArgs, "site.yml")
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
	t.Logf("ansible-playbook %s: %s; slowest tasks:\n%s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond), slowestTasks(string(out), 8))
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
