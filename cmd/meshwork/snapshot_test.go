package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/raftstore"
)

// TestSnapshotSaveInspect saves a snapshot from a real one-server cluster,
// inspects it offline, refuses to overwrite it without --force, replaces
// it with --force, and names what is wrong with a bad file.
func TestSnapshotSaveInspect(t *testing.T) {
	addr := policyAgent(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	if out, err := runCLI(t, "policy", "apply", "-f", writeFile(t, "web.yaml", "kind: ServiceDefaults\nname: web\n"), "--http-addr", addr); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "snapshot", "save", file, "--http-addr", addr); err != nil || !strings.Contains(out, "Saved snapshot to "+file) {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	first, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, "snapshot", "inspect", file)
	if err != nil {
		t.Fatalf("snapshot inspect: %v\n%s", err, out)
	}
	for _, want := range [][]string{{"Format:", raftstore.BackupFormat}, {"ServiceDefaults:", "1"}, {"Private", "state:", "omitted", "(left", "out:", "secret/)"}} {
		if !regexpLine(out, want...) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}

	// An existing file is kept, and the command fails, without --force.
	_, err = runCLI(t, "snapshot", "save", file, "--http-addr", addr)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "--force") || exitCode(err) != exitFailed {
		t.Fatalf("save over an existing file: %v, want fs.ErrExist naming --force", err)
	}
	if now, _ := os.ReadFile(file); !bytes.Equal(now, first) {
		t.Fatal("a refused save changed the file")
	}
	if out, err := runCLI(t, "snapshot", "save", "--force", file, "--http-addr", addr); err != nil {
		t.Fatalf("snapshot save --force: %v\n%s", err, out)
	}
	if now, _ := os.ReadFile(file); bytes.Equal(now, first) {
		t.Fatal("save --force did not replace the file")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}

	// A bad file gets an error that says what is wrong.
	truncated := filepath.Join(dir, "truncated.snap")
	if err := os.WriteFile(truncated, first[:len(first)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"truncated": truncated, "not a backup": writeFile(t, "x.snap", "hello")} {
		_, err := runCLI(t, "snapshot", "inspect", path)
		if !errors.Is(err, raftstore.ErrBadSnapshot) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want ErrBadSnapshot naming the file", name, err)
		}
	}
}
