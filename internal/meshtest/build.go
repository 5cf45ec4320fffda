package meshtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var builds = struct {
	sync.Mutex
	paths map[string]string
	errs  map[string]error
}{paths: map[string]string{}, errs: map[string]error{}}

// Build compiles the module's package pkg (such as "./cmd/meshwork") once
// per test process, from any working directory, and returns the binary's
// path. Tests that run the real binary as a process start here.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.paths[pkg]; ok {
		return p
	}
	if err, ok := builds.errs[pkg]; ok {
		t.Fatal(err)
	}
	p, err := build(pkg)
	if err != nil {
		builds.errs[pkg] = err
		t.Fatal(err)
	}
	builds.paths[pkg] = p
	return p
}

func build(pkg string) (string, error) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	dir, err := os.MkdirTemp("", "meshwork-test-bin-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = strings.TrimSpace(string(root))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v: %s", pkg, err, b)
	}
	return out, nil
}
