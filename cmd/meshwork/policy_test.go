package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/raftstore"
)

// runCLI runs the root command with args and returns its output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// policyAgent is a one-server cluster and a client agent whose policy API
// is served on a loopback port.
func policyAgent(t *testing.T) string {
	t.Helper()
	c := raftstore.MakeTestCluster(t, 1)
	cl := c.AddClient("cli")
	mux := http.NewServeMux()
	if err := cl.Node.RegisterAPI(func(p string, h http.Handler) error { mux.Handle(p, h); return nil }); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPolicyCLI(t *testing.T) {
	addr := policyAgent(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("kind: ServiceDefaults\nname: web\nprotocol: http\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.yml"), []byte("kind: Split\nname: web\nsplits:\n- weight: 100\n  subset: {tags: [v1]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: Split\nname: web\nsplits:\n- weight: 100\n- weight: -5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "backup.snap")

	steps := []struct {
		args    []string
		wantErr string
		want    string
	}{
		{[]string{"policy", "apply", "-f", dir}, "", `Split "web" applied`},
		{[]string{"policy", "apply", "-f", bad}, `bad.yaml: Split "web": splits[1].weight: -5 must be between 0 and 100`, ""},
		{[]string{"policy", "apply"}, "-f FILE|DIR|- is required", ""},
		{[]string{"policy", "get", "split", "web", "--consistent"}, "", "kind: Split\nname: web\nsplits:\n  - weight: 100"},
		{[]string{"policy", "list", "--consistent"}, "", "ServiceDefaults  web"},
		{[]string{"policy", "list", "gateway"}, `kind "gateway" is unknown`, ""},
		{[]string{"policy", "delete", "ServiceDefaults", "web"}, "", `ServiceDefaults "web" deleted`},
		{[]string{"policy", "get", "ServiceDefaults", "web", "--consistent"}, "not found", ""},
		{[]string{"policy", "status"}, "", "Index:"},
		{[]string{"operator", "raft", "list-peers"}, "", "s1    "},
		{[]string{"snapshot", "save", snap}, "", "Saved snapshot"},
		{[]string{"snapshot", "restore", snap}, "", "Restored snapshot"},
		{[]string{"snapshot", "restore", bad}, "bad snapshot file", ""},
	}
	for _, s := range steps {
		args := append(s.args, "--http-addr", addr)
		out, err := runCLI(t, args...)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("%v: error %v, want %q", s.args, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v\n%s", s.args, err, out)
		}
		if !strings.Contains(out, s.want) {
			t.Fatalf("%v: output\n%s\nwant it to contain %q", s.args, out, s.want)
		}
	}
}
