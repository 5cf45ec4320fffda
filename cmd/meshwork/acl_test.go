package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent"
	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/testnet"
)

// startACLAgent runs a real --dev agent in process, with ACLs on and deny
// by default, on a loopback address of its own, and returns its API's
// address.
func startACLAgent(t *testing.T) string {
	t.Helper()
	ip := loopbackAddr()
	cfg := &config.Config{Dev: true, Node: "cli-acl", DataDir: t.TempDir(), Bind: ip, LogLevel: "warn"}
	cfg.Addresses.HTTP, cfg.Addresses.DNS = ip, ip
	cfg.Ports.Tunnel = -1
	cfg.Tunnel.VIPRange = "127.244.0.0/16"
	cfg.ACL.Enabled = true
	if err := cfg.ApplyDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, agent.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	// The ACL API answers once Raft has a leader.
	testnet.Eventually(t, time.Minute, "a leader", func() error {
		_, err := api.NewClient(a.HTTPAddr()).Do(ctx, "GET", "/v1/acl/token/self", nil, nil, nil)
		return err
	})
	return a.HTTPAddr()
}

var fieldRE = func(name string) *regexp.Regexp { return regexp.MustCompile(`(?m)^` + name + `:\s+(\S+)$`) }

// TestACLCLI drives `meshwork acl` and the token flags against a real
// agent: bootstrap once, a policy from a YAML file, a token that links it,
// the token passed every way, a refusal printed as the agent words it,
// and no secret in any listing.
func TestACLCLI(t *testing.T) {
	addr := startACLAgent(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append(args, "--http-addr", addr)...)
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return out
	}

	out := must("acl", "bootstrap")
	m := fieldRE("SecretID").FindStringSubmatch(out)
	if m == nil || acl.CheckSecret("bootstrap", m[1]) != nil || !strings.Contains(out, "shown only this once") {
		t.Fatalf("bootstrap printed:\n%s", out)
	}
	mgmt := m[1]
	if _, err := run("acl", "bootstrap"); err == nil || !strings.Contains(err.Error(), "bootstrap already done") {
		t.Fatalf("second bootstrap: %v", err)
	}
	// Without a token, the agent refuses, and the CLI says so plainly.
	_, err := run("acl", "token", "list")
	if err == nil || errorText(err) != "permission denied: token lacks acl:read" {
		t.Fatalf("anonymous token list: %v", err)
	}

	t.Setenv(api.TokenEnv, mgmt)
	bad := write("bad.yaml", "name: web-deploy\nrules:\n  service:\n    web: wirte\n")
	if _, err := run("acl", "policy", "create", "-f", bad); err == nil || !strings.Contains(err.Error(), "bad.yaml") || !strings.Contains(err.Error(), `did you mean "write"`) {
		t.Fatalf("policy with a typo: %v", err)
	}
	policy := write("web.yaml", "name: web-deploy\ndescription: CI deploys web\nrules:\n  service:\n    web: write\n")
	must("acl", "policy", "create", "-f", policy)
	if out := must("acl", "policy", "list"); !strings.Contains(out, "web-deploy") {
		t.Fatalf("policy list:\n%s", out)
	}
	if out := must("acl", "policy", "read", "web-deploy"); !strings.Contains(out, "name: web-deploy") || !strings.Contains(out, "service:\n    web: write") {
		t.Fatalf("policy read:\n%s", out)
	}

	out = must("acl", "token", "create", "--policy", "web-deploy", "--description", "ci")
	accessor := fieldRE("AccessorID").FindStringSubmatch(out)[1]
	web := fieldRE("SecretID").FindStringSubmatch(out)[1]
	list := must("acl", "token", "list")
	if !strings.Contains(list, accessor) || strings.Contains(list, web) || strings.Contains(list, mgmt) || !strings.Contains(list, "web-deploy") {
		t.Fatalf("token list shows secrets, or misses the token:\n%s", list)
	}
	if out := must("acl", "token", "read", accessor, "--format", "json"); strings.Contains(out, web) || strings.Contains(out, "secret") {
		t.Fatalf("token read:\n%s", out)
	}
	given := filepath.Join(dir, "given.secret")
	sec, _ := runCLI(t, "acl", "secret")
	write("given.secret", sec)
	out = must("acl", "token", "create", "--secret-file", given, "--ttl", "1h")
	if got := fieldRE("SecretID").FindStringSubmatch(out); got == nil || got[1] != strings.TrimSpace(sec) || !strings.Contains(out, "Expires:") {
		t.Fatalf("token with a given secret:\n%s", out)
	}

	// The web token, every way it can be passed.
	webFile := write("web.token", web+"\n")
	svcWeb := write("svc-web.yaml", "name: web\nport: 80\n")
	svcAPI := write("svc-api.yaml", "name: api\nport: 81\n")
	t.Setenv(api.TokenEnv, "")
	for _, how := range [][]string{{"--token", web}, {"--token-file", webFile}} {
		must(append([]string{"services", "register", svcWeb}, how...)...)
		_, err := run(append([]string{"services", "register", svcAPI}, how...)...)
		if err == nil || errorText(err) != `permission denied: token lacks service:write on "api"` {
			t.Fatalf("%v registers api: %v", how, err)
		}
	}
	t.Setenv(api.TokenFileEnv, webFile)
	if out := must("acl", "token", "self"); !strings.Contains(out, accessor) {
		t.Fatalf("token self with $%s:\n%s", api.TokenFileEnv, out)
	}
	t.Setenv(api.TokenFileEnv, "")
	t.Setenv(api.TokenEnv, web)
	if out := must("services", "list"); !strings.Contains(out, "web") {
		t.Fatalf("services list with $%s:\n%s", api.TokenEnv, out)
	}
	t.Setenv(api.TokenEnv, mgmt)

	out = must("acl", "token", "update", accessor, "--description", "ci, now")
	if !strings.Contains(out, "ci, now") || !strings.Contains(out, "web-deploy") {
		t.Fatalf("token update kept the policies? \n%s", out)
	}
	if _, err := run("acl", "policy", "delete", "web-deploy"); err == nil || !strings.Contains(err.Error(), accessor) {
		t.Fatalf("deleting a linked policy: %v", err)
	}
	must("acl", "token", "update", accessor, "--policy", "")
	must("acl", "policy", "delete", "web-deploy")
	must("acl", "token", "delete", accessor)
	if _, err := run("services", "list", "--token", web); err == nil || !strings.Contains(errorText(err), "ACL token not found") {
		t.Fatalf("a deleted token: %v", err)
	}

	// The anonymous token reads the catalog until its policy is unlinked,
	// as docs/security.md says: then lists are empty and reads refused.
	t.Setenv(api.TokenEnv, "")
	if out := must("catalog", "services"); !strings.Contains(out, "web") {
		t.Fatalf("anonymous catalog list:\n%s", out)
	}
	must("catalog", "service", "web")
	must("acl", "token", "update", acl.AnonymousAccessorID, "--policy", "", "--token", mgmt)
	if out := must("catalog", "services"); strings.Contains(out, "web") {
		t.Fatalf("anonymous catalog list after the unlink:\n%s", out)
	}
	if _, err := run("catalog", "service", "web"); err == nil || errorText(err) != `permission denied: token lacks service:read on "web"` {
		t.Fatalf("anonymous catalog read after the unlink: %v", err)
	}
}

// TestTokenFlagsOnEveryCommand: every command that talks to an agent takes
// --token and --token-file, and reads them before it sends anything; errors
// never repeat a secret.
func TestTokenFlagsOnEveryCommand(t *testing.T) {
	t.Setenv(api.TokenEnv, "")
	t.Setenv(api.TokenFileEnv, "")
	var leaves []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.HasSubCommands() && c.Flags().Lookup("http-addr") != nil {
			leaves = append(leaves, c)
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd())
	if len(leaves) < 30 {
		t.Fatalf("found %d commands that talk to an agent", len(leaves))
	}
	missing := filepath.Join(t.TempDir(), "absent")
	for _, c := range leaves {
		if c.Flags().Lookup("token") == nil || c.Flags().Lookup("token-file") == nil {
			t.Errorf("%s has no --token or --token-file", c.CommandPath())
			continue
		}
		var args []string
		for n := 0; n < 4 && c.Args != nil && c.Args(c, args) != nil; n++ {
			args = append(args, "x")
		}
		path := strings.Fields(c.CommandPath())[1:]
		// An unreachable agent: the token must be refused first.
		_, err := runCLI(t, append(append(path, args...), "--token-file", missing, "--http-addr", "127.0.0.1:1")...)
		if err == nil || !strings.Contains(err.Error(), "--token-file") {
			t.Errorf("%s with a missing token file: %v", c.CommandPath(), err)
		}
	}
	secret, _ := acl.NewSecret()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--token", secret, "--token-file", missing}, "give one"},
		{[]string{"--token", secret[:20]}, "--token is 20 characters long"},
		{[]string{"--token", "11111111-2222-3333-4444-555555555555"}, "not its accessor ID"},
	} {
		_, err := runCLI(t, append([]string{"members", "--http-addr", "127.0.0.1:1"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), secret[:20]) {
			t.Errorf("%v: %v, want %q and no secret", tc.args, err, tc.want)
		}
	}
	t.Setenv(api.TokenEnv, "mwt_short")
	if _, err := runCLI(t, "members", "--http-addr", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "$"+api.TokenEnv) {
		t.Errorf("a bad $%s: %v", api.TokenEnv, err)
	}
	if errorText(errors.New("plain")) != "plain" {
		t.Fatal("errorText changed a plain error")
	}
}
