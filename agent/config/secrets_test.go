package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretWarnings(t *testing.T) {
	const key = "9Z0bmPCQ0fX2dbP1HXdPM6oZJwqD4o1Y3EZp4P6q0p8="
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		warn    string // "" for none
	}{
		{"encrypt, private", "encrypt: " + key + "\n", 0o600, ""},
		{"encrypt, world-readable", "encrypt: " + key + "\n", 0o644, "holds encrypt, but its mode 0644 lets every user"},
		{"cluster_key, group-writable", "cluster_key: " + key + "\n", 0o660, "holds cluster_key, but its mode 0660 lets its group change it"},
		{"both keys", "encrypt: " + key + "\ncluster_key: " + key + "\n", 0o604, "holds encrypt and cluster_key"},
		{"no secret, world-readable", "node: web-01\n", 0o644, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "meshwork.yaml")
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(f, tc.mode); err != nil {
				t.Fatal(err)
			}
			l, err := Load([]string{f}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ws := l.SecretWarnings()
			if tc.warn == "" {
				if len(ws) != 0 {
					t.Fatalf("warnings %q, want none", ws)
				}
				return
			}
			if len(ws) != 1 || !strings.Contains(ws[0], tc.warn) || !strings.Contains(ws[0], f) {
				t.Fatalf("warnings %q, want one naming %s and %q", ws, f, tc.warn)
			}
		})
	}
}

// TestSecretWarningsKeyFiles: files named by the ca.*_file keys are checked
// too; a missing one is left to the component that reads it.
func TestSecretWarningsKeyFiles(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "ca-token")
	if err := os.WriteFile(tok, []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tok, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "meshwork.yaml")
	src := "ca:\n  token_file: " + tok + "\n  state_key_file: " + filepath.Join(dir, "missing.key") + "\n"
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Load([]string{cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := l.SecretWarnings()
	if len(ws) != 1 || !strings.Contains(ws[0], tok) || !strings.Contains(ws[0], "ca.token_file") {
		t.Fatalf("warnings %q, want one for %s", ws, tok)
	}
}
