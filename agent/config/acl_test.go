package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A well-formed token secret, and a second one, for the tests only.
const (
	testSecret  = "mwt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	testSecret2 = "mwt_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
)

func TestACLKeys(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	tests := []struct {
		name string
		body string
		want string // "" means valid
	}{
		{"enabled, deny", "acl:\n  enabled: true\n  default_policy: deny\n", ""},
		{"allow", "acl:\n  enabled: true\n  default_policy: allow\n", ""},
		{"bad default policy", "acl:\n  default_policy: maybe\n", `acl.default_policy: "maybe" must be deny or allow`},
		{"unknown key", "acl:\n  enable: true\n", `acl.enable: unknown key (did you mean "enabled"?)`},
		{"unknown token key", "acl:\n  tokens:\n    agnet: x\n", `acl.tokens.agnet: unknown key`},
		{"agent token", "acl:\n  tokens:\n    agent: " + testSecret + "\n", ""},
		{"agent token file", "acl:\n  tokens:\n    agent_file: /etc/meshwork/agent.token\n", ""},
		{"agent token both ways", "acl:\n  tokens:\n    agent: " + testSecret + "\n    agent_file: /f\n", "acl.tokens.agent_file"},
		{"bad agent token", "acl:\n  tokens:\n    agent: mwt_tooshort\n", "acl.tokens.agent: the value is 12 characters long"},
		{"an accessor for a secret", "acl:\n  tokens:\n    agent: 11111111-2222-3333-4444-555555555555\n", "not its accessor ID"},
		{"initial management on a server", "server: true\nbootstrap_expect: 1\nacl:\n  tokens:\n    initial_management: " + testSecret2 + "\n", ""},
		{"initial management on a client", "acl:\n  tokens:\n    initial_management: " + testSecret2 + "\n", "acl.tokens.initial_management: is only for servers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := loadCase(t, dir, base, tc.body, tc.want)
			if err != nil && (strings.Contains(err.Error(), "mwt_tooshort") || strings.Contains(err.Error(), testSecret)) {
				t.Fatalf("an error repeats a secret: %v", err)
			}
			if err == nil && !strings.Contains(tc.body, "default_policy") && l.ACL.DefaultPolicy != "deny" {
				t.Errorf("default_policy defaults to %q, want deny", l.ACL.DefaultPolicy)
			}
		})
	}
	// Off by default.
	l, err := LoadAndValidate(nil, nil, func(c *Config) { c.Dev = true })
	if err != nil || l.ACL.Enabled || l.ACL.DefaultPolicy != "deny" {
		t.Fatalf("defaults: enabled %v, default_policy %q, %v", l.ACL.Enabled, l.ACL.DefaultPolicy, err)
	}
}

// TestACLSecretWarnings: a config file that sets a token secret, and the
// agent's token file, are secret files.
func TestACLSecretWarnings(t *testing.T) {
	dir := t.TempDir()
	conf := write(t, dir, "acl.yaml", "acl:\n  tokens:\n    agent: "+testSecret+"\n")
	tokFile := filepath.Join(dir, "agent.token")
	if err := os.WriteFile(tokFile, []byte(testSecret2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf2 := write(t, dir, "acl2.yaml", "acl:\n  tokens:\n    agent_file: "+tokFile+"\n")
	for _, p := range []string{conf, tokFile} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Load([]string{conf, conf2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := strings.Join(l.SecretWarnings(), "\n")
	for _, want := range []string{conf + " holds acl.tokens.agent", tokFile + " holds the secret of acl.tokens.agent_file"} {
		if !strings.Contains(ws, want) {
			t.Errorf("warnings %q lack %q", ws, want)
		}
	}
	if strings.Contains(ws, testSecret) || strings.Contains(ws, testSecret2) {
		t.Fatal("a warning repeats a secret")
	}
}
