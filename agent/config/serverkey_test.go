package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testServerKey is a well-formed key other than testKey, for the tests only.
const testServerKey = "c2VydmVyc2VydmVyc2VydmVyc2VydmVyc2VydmVyc2U="

func TestServerKey(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	server := "server: true\nbootstrap_expect: 3\n"
	tests := []struct {
		name string
		body string
		want string // "" means valid
	}{
		{"on a server", server + "server_key: " + testServerKey + "\n", ""},
		{"none", server, ""},
		{"on a client", "server_key: " + testServerKey + "\n", "server_key: is only for servers"},
		{"the cluster key", server + "server_key: " + testKey + "\n", "server_key: is the same key as cluster_key"},
		{"not base64", server + "server_key: not-base64-at-all!\n", "server_key: is not valid base64"},
		{"19 bytes", server + "server_key: c2VydmVyc2VydmVyc2VydmVyAA==\n", "server_key: decodes to 19 bytes, want 32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := loadCase(t, dir, base, tc.body, tc.want)
			if err != nil {
				for _, secret := range []string{testServerKey, testKey, "not-base64-at-all!", "c2VydmVyc2VydmVyc2VydmVyAA=="} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("an error repeats a key: %v", err)
					}
				}
				if !strings.Contains(err.Error(), filepath.Join(dir, "10-case.yaml")) {
					t.Errorf("error %q does not name the file that set the key", err)
				}
			}
			if err == nil && strings.Contains(tc.body, "server_key") && l.ServerKey != testServerKey {
				t.Errorf("server_key = %q", l.ServerKey)
			}
		})
	}

	// Dev is a server of one: it makes its own, apart from its cluster key.
	l, err := LoadAndValidate(nil, nil, func(c *Config) { c.Dev = true })
	if err != nil || l.ServerKey == "" || l.ServerKey == l.ClusterKey {
		t.Fatalf("dev: server_key %q (cluster_key %q), %v", l.ServerKey, l.ClusterKey, err)
	}
}

// TestServerKeySecretFile: a config file that sets server_key is a secret
// file.
func TestServerKeySecretFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(f, []byte("server_key: "+testServerKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Load([]string{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := l.SecretWarnings()
	if len(ws) != 1 || !strings.Contains(ws[0], "holds server_key, but its mode 0644") {
		t.Fatalf("warnings %q, want one for server_key", ws)
	}
}
