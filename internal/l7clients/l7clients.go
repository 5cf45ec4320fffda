// Package l7clients runs real HTTP, HTTP/2, gRPC and WebSocket clients and
// servers for tests of the mesh's per-request path: curl, h2load, grpc-go's
// interop client and server, and a WebSocket echo. It is test support, like
// raftstore/testing.go: other packages' tests import it, production code
// never does.
//
// The external tools come from `scripts/deps.sh test`. A test that needs a
// missing tool fails, naming that group, rather than skipping: a real-client
// test that silently skips proves nothing.
//
// Every child process is bounded by a context or stopped by its PID at the
// test's cleanup, and on Linux dies with the test binary.
package l7clients

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// DepsGroup is the scripts/deps.sh group that installs every tool here.
const DepsGroup = "test"

// Tool names as scripts/deps.sh installs them.
const (
	ToolCurl          = "curl"
	ToolH2load        = "h2load"
	ToolInteropClient = "grpc-interop-client"
	ToolInteropServer = "grpc-interop-server"
)

// ErrToolMissing is returned by LookTool for a tool neither on PATH nor in
// GOBIN.
var ErrToolMissing = errors.New("tool not installed")

// Tool returns the path of the named tool, from PATH or else from GOBIN, and
// fails t with the deps.sh group to run when it is in neither.
func Tool(t testing.TB, name string) string {
	t.Helper()
	path, err := LookTool(name)
	if err != nil {
		t.Fatalf("%v: run scripts/deps.sh %s", err, DepsGroup)
	}
	return path
}

// LookTool finds name on PATH, then in GOBIN (go env GOBIN, else
// GOPATH/bin), where go install and deps.sh put Go tools that a shell's
// PATH may lack.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dir := goBin()
	if dir != "" {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("l7clients: %s not on PATH or in GOBIN %q: %w", name, dir, ErrToolMissing)
}

// goBin is where go install puts binaries, asked of go once.
var goBin = sync.OnceValue(func() string {
	if d := os.Getenv("GOBIN"); d != "" {
		return d
	}
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, "go", "bin")
		}
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > 0 && lines[0] != "" {
		return lines[0]
	}
	if len(lines) > 1 && lines[1] != "" {
		// GOPATH may be a list; go install uses the first entry.
		return filepath.Join(filepath.SplitList(lines[1])[0], "bin")
	}
	return ""
})

// waitDelay bounds how long a killed child's pipes are drained.
const waitDelay = 2 * time.Second

// command is exec.CommandContext for a child that dies with the test
// binary and whose output pipes cannot outlive it.
func command(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = childAttr()
	cmd.WaitDelay = waitDelay
	return cmd
}

// run runs a tool to completion and returns what it wrote to standard
// output and standard error; err, set when it exits non-zero or ctx ends,
// carries its standard error.
func run(ctx context.Context, name string, args ...string) (stdout, stderr string, err error) {
	path, err := LookTool(name)
	if err != nil {
		return "", "", err
	}
	var o, e bytes.Buffer
	cmd := command(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), e.String(), fmt.Errorf("l7clients: %s %s: %w\n%s", name, strings.Join(args, " "), err, e.String())
	}
	return o.String(), e.String(), nil
}

// RunCurl runs curl with args and returns what it wrote to standard output
// and standard error (its trace, with --verbose).
func RunCurl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return run(ctx, ToolCurl, args...)
}
