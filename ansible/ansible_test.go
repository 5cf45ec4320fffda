// Tests of the Ansible role without hosts: lint, syntax, and the rendered
// configuration read by the agent's own loader. test/nspawn runs the role
// for real on booted hosts.
package ansible_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/config"
)

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (scripts/deps.sh lint installs it)", name)
	}
}

// ansible runs an Ansible command in this directory with its ansible.cfg.
func ansible(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+filepath.Join(wd, "ansible.cfg"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_LOCAL_TEMP="+t.TempDir(),
		"HOME="+t.TempDir(), // ansible-lint and ansible write caches there
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

func TestAnsibleLint(t *testing.T) {
	requireTool(t, "ansible-lint")
	out, err := ansible(t, "ansible-lint", "--profile", "production", "--offline", "site.yml", "roles/meshwork", "tests/render.yml",
		"rotate-gossip-key.yml", "rotate-ca-root.yml", "rotate-cluster-key.yml")
	if err != nil {
		t.Fatalf("ansible-lint: %v\n%s", err, out)
	}
}

func TestPlaybookSyntax(t *testing.T) {
	requireTool(t, "ansible-playbook")
	for _, p := range []string{"site.yml", "rotate-gossip-key.yml", "rotate-ca-root.yml", "rotate-cluster-key.yml"} {
		if out, err := ansible(t, "ansible-playbook", "--syntax-check", "-i", "inventory/example/hosts.yml", p); err != nil {
			t.Errorf("ansible-playbook --syntax-check %s: %v\n%s", p, err, out)
		}
	}
}

// renderHost is what the test inventory gives one host.
type renderHost struct {
	group string
	vars  map[string]any
}

// render runs tests/render.yml over an inventory of hosts and returns the
// directory holding <host>/{meshwork.yaml,secrets.yaml,resolved.conf}.
func render(t *testing.T, hosts map[string]renderHost, extra map[string]any) string {
	t.Helper()
	requireTool(t, "ansible-playbook")
	groups := map[string]map[string]any{"servers": {}, "clients": {}}
	for name, h := range hosts {
		groups[h.group][name] = h.vars
	}
	inv := map[string]any{"all": map[string]any{"children": map[string]any{
		"servers": map[string]any{"hosts": groups["servers"]},
		"clients": map[string]any{"hosts": groups["clients"]},
	}}}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	extra["meshwork_preview_dir"] = out
	for name, v := range map[string]any{"inventory.yml": inv, "extra.json": extra} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if text, err := ansible(t, "ansible-playbook", "-i", filepath.Join(dir, "inventory.yml"), "-e", "@"+filepath.Join(dir, "extra.json"), "tests/render.yml"); err != nil {
		t.Fatalf("render: %v\n%s", err, text)
	}
	return out
}

const (
	testEncrypt    = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
	testClusterKey = "Wm9vbS16b29tLXRoaXMtaXMtMzItYnl0ZXMtbG9uZyE="
	testManagement = "mwt_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
)

func TestRenderedConfigLoads(t *testing.T) {
	web := []map[string]any{{"name": "web", "id": "web-1", "port": 8080, "tags": []string{"v1"}}}
	hosts := map[string]renderHost{
		"s1": {"servers", map[string]any{"ansible_host": "198.18.5.1"}},
		"s2": {"servers", map[string]any{"meshwork_advertise": "198.18.5.2"}},
		"s3": {"servers", map[string]any{"ansible_host": "198.18.5.3"}},
		"c1": {"clients", map[string]any{"ansible_host": "198.18.5.11", "meshwork_services": web,
			"meshwork_ports": map[string]any{"dns": 8653}, "meshwork_domain": "corp"}},
	}
	out := render(t, hosts, map[string]any{
		"meshwork_encrypt":              testEncrypt,
		"meshwork_cluster_key":          testClusterKey,
		"meshwork_ca_token":             "one-time-token",
		"meshwork_acl_management_token": testManagement,
	})
	wantJoin := []string{"198.18.5.1", "198.18.5.2", "198.18.5.3"}

	for name, h := range hosts {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(out, name)
			// What the agent reads from /etc/meshwork: every *.yaml, merged.
			l, err := config.LoadAndValidate(nil, []string{dir}, nil)
			if err != nil {
				t.Fatalf("the agent refuses the rendered config: %v", err)
			}
			c := l.Config
			server := h.group == "servers"
			if c.Node != name || c.Server != server || c.DataDir != "/var/lib/meshwork" {
				t.Errorf("node=%q server=%v data_dir=%q, want %q %v /var/lib/meshwork", c.Node, c.Server, c.DataDir, name, server)
			}
			if want := map[bool]int{true: 3}[server]; c.BootstrapExpect != want {
				t.Errorf("bootstrap_expect = %d, want %d", c.BootstrapExpect, want)
			}
			if !slices.Equal(c.RetryJoin, wantJoin) {
				t.Errorf("retry_join = %v, want %v", c.RetryJoin, wantJoin)
			}
			if c.Encrypt != testEncrypt || c.ClusterKey != testClusterKey {
				t.Errorf("keys not carried through secrets.yaml")
			}
			if c.CA.TokenFile != "/etc/meshwork/ca-token" {
				t.Errorf("ca.token_file = %q", c.CA.TokenFile)
			}
			// ACLs are on and deny by default; only servers hold the
			// management token, which their leader makes into a token.
			if !c.ACL.Enabled || c.ACL.DefaultPolicy != "deny" || c.ACL.Tokens.AgentFile != "/etc/meshwork/agent-token" || c.ACL.Tokens.Agent != "" {
				t.Errorf("acl = %+v, want enabled, deny, agent_file /etc/meshwork/agent-token", c.ACL)
			}
			if want := map[bool]string{true: testManagement}[server]; c.ACL.Tokens.InitialManagement != want {
				t.Errorf("acl.tokens.initial_management = %q, want %q", c.ACL.Tokens.InitialManagement, want)
			}
			main, err := os.ReadFile(filepath.Join(dir, "meshwork.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			// Services live in their own file, whose change reloads the
			// agent instead of restarting it.
			if bytes.Contains(main, []byte("\nservices:")) {
				t.Errorf("meshwork.yaml, whose change restarts the agent, holds the services")
			}
			services, err := os.ReadFile(filepath.Join(dir, "services.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Contains(services, []byte("name: web")); got != (name == "c1") {
				t.Errorf("services.yaml names web: %v, want %v:\n%s", got, name == "c1", services)
			}
			for _, secret := range []string{testEncrypt, testClusterKey, "one-time-token", testManagement} {
				if bytes.Contains(main, []byte(secret)) {
					t.Errorf("meshwork.yaml, which Ansible diffs in the open, holds a secret")
				}
			}
			resolved, err := os.ReadFile(filepath.Join(dir, "resolved.conf"))
			if err != nil {
				t.Fatal(err)
			}
			wantDNS, wantDomain := "DNS=127.0.0.1:8600", "Domains=~mesh"
			if name == "c1" {
				wantDNS, wantDomain = "DNS=127.0.0.1:8653", "Domains=~corp"
				if len(c.Services) != 1 || c.Services[0].Name != "web" || c.Services[0].Port != 8080 {
					t.Errorf("services = %+v, want web on 8080", c.Services)
				}
				if c.Ports.DNS != 8653 || c.DNS.Domain != "corp." {
					t.Errorf("ports.dns=%d dns.domain=%q, want 8653 and corp.", c.Ports.DNS, c.DNS.Domain)
				}
			}
			for _, want := range []string{wantDNS, wantDomain} {
				if !strings.Contains(string(resolved), "\n"+want+"\n") {
					t.Errorf("resolved drop-in lacks %q:\n%s", want, resolved)
				}
			}
		})
	}
}

// The policy the role makes for each host's agent token, read by the
// agent's own parser and decided by its own authorizer: the agent writes its
// node and the services of meshwork_services, reads every node (the role's
// health check lists the members with it), and nothing else.
func TestAgentPolicyGrantsNodeAndServices(t *testing.T) {
	hosts := map[string]renderHost{
		"s1":             {"servers", map[string]any{}},
		"web-1.corp.lan": {"clients", map[string]any{"meshwork_services": []map[string]any{{"name": "web", "port": 8080}, {"name": "web", "id": "web-2", "port": 8081}, {"name": "Metrics", "port": 9100}}}},
	}
	out := render(t, hosts, map[string]any{"meshwork_cluster_key": testClusterKey})
	for name, tc := range map[string]struct {
		policy           string
		writes, notWrite []string // services
	}{
		"s1":             {"agent-s1", nil, []string{"web"}},
		"web-1.corp.lan": {"agent-web-1-corp-lan", []string{"web", "metrics"}, []string{"api", "web-2"}},
	} {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(out, name, "acl-policy.json"))
			if err != nil {
				t.Fatal(err)
			}
			p, err := acl.ParsePolicy(data)
			if err != nil {
				t.Fatalf("the agent refuses the role's policy: %v\n%s", err, data)
			}
			if p.Name != tc.policy {
				t.Errorf("policy name %q, want %q", p.Name, tc.policy)
			}
			authz := authorizerFor(t, p)
			other := map[string]string{"s1": "web-1.corp.lan", "web-1.corp.lan": "s1"}[name]
			type check struct {
				r    acl.Resource
				name string
				want acl.Access
				ok   bool
			}
			checks := []check{
				{acl.ResourceNode, name, acl.Write, true},
				{acl.ResourceNode, other, acl.Read, true},
				{acl.ResourceNode, other, acl.Write, false},
				{acl.ResourceIntention, "web", acl.Read, false},
				{acl.ResourceACL, "", acl.Read, false},
			}
			for _, svc := range tc.writes {
				checks = append(checks, check{acl.ResourceService, svc, acl.Write, true})
			}
			for _, svc := range tc.notWrite {
				checks = append(checks, check{acl.ResourceService, svc, acl.Write, false})
			}
			for _, c := range checks {
				if got := authz.Allowed(c.r, c.name, c.want); got != c.ok {
					t.Errorf("%v %v on %q: allowed=%v, want %v", c.r, c.want, c.name, got, c.ok)
				}
			}
		})
	}
}

// authorizerFor resolves a token that links p alone, under deny by
// default, as an agent would.
func authorizerFor(t *testing.T, p *acl.Policy) *acl.Authorizer {
	t.Helper()
	ctx := context.Background()
	store := acl.NewMemStore()
	var err error
	if p.ID, err = acl.NewID(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetPolicy(ctx, p, 0); err != nil {
		t.Fatalf("store the policy: %v", err)
	}
	tok, secret, err := acl.NewToken(acl.TokenSpec{Policies: []acl.PolicyLink{{Name: p.Name}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetToken(ctx, tok, 0); err != nil {
		t.Fatalf("store the token: %v", err)
	}
	res, err := acl.NewResolver(acl.Config{Enabled: true, DefaultPolicy: acl.DefaultDeny}, acl.Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	authz, err := res.Resolve(secret)
	if err != nil {
		t.Fatal(err)
	}
	return authz
}

// With the defaults, the role's resolved drop-in says what the one shipped in
// systemd/ says.
func TestResolvedTemplateMatchesShippedDropIn(t *testing.T) {
	out := render(t, map[string]renderHost{"s1": {"servers", map[string]any{}}}, map[string]any{"meshwork_cluster_key": testClusterKey})
	settings := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	got, want := settings(filepath.Join(out, "s1", "resolved.conf")), settings("../systemd/resolved-meshwork.conf")
	if !slices.Equal(got, want) {
		t.Errorf("rendered drop-in %q, shipped %q", got, want)
	}
}

// The role ships real copies of the unit and drop-ins of systemd/, so that
// it works once packed and installed elsewhere; they must stay the same
// files. `make role-files` copies them again.
func TestRoleFilesMatchSystemd(t *testing.T) {
	for _, name := range []string{"meshwork.service", "meshwork.sysusers", "sysctl-meshwork.conf"} {
		t.Run(name, func(t *testing.T) {
			copyPath := filepath.Join("roles/meshwork/files", name)
			fi, err := os.Lstat(copyPath)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() {
				t.Fatalf("%s is not a regular file (%v): a symlink breaks once the role leaves this repository; run make role-files", copyPath, fi.Mode().Type())
			}
			got, err := os.ReadFile(copyPath)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("../systemd", name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from systemd/%s: run make role-files", copyPath, name)
			}
		})
	}
}

// defaultsVar is a variable line of defaults/main.yml: set, or documented
// commented out (secrets and playbook-level settings have no default).
var defaultsVar = regexp.MustCompile(`(?m)^(?:# )?(meshwork_[a-z0-9_]+):`)

// Every variable the role's defaults name has a row in the role's README
// variable tables.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	defaults, err := os.ReadFile("roles/meshwork/defaults/main.yml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("roles/meshwork/README.md")
	if err != nil {
		t.Fatal(err)
	}
	vars := defaultsVar.FindAllStringSubmatch(string(defaults), -1)
	if len(vars) < 50 {
		t.Fatalf("found %d variables in defaults/main.yml; the pattern no longer matches its lines", len(vars))
	}
	for _, m := range vars {
		if !bytes.Contains(readme, []byte("\n| `"+m[1]+"` |")) {
			t.Errorf("%s (defaults/main.yml) has no row in roles/meshwork/README.md", m[1])
		}
	}
	for _, must := range []string{"meshwork_client_serial", "meshwork_cli_timeout", "meshwork_install_method"} {
		if !slices.ContainsFunc(vars, func(m []string) bool { return m[1] == must }) {
			t.Errorf("%s is not in defaults/main.yml", must)
		}
	}
}
