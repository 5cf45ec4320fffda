package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/raftstore"
)

// runCLI runs the root command with args and returns its output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runCLIInput(t, "", args...)
}

// runCLIInput is runCLI with stdin as the command's standard input.
func runCLIInput(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	root.SetIn(strings.NewReader(stdin))
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
	if err := cl.Node.RegisterAPI(acl.MountAllowAll(mux)); err != nil {
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

// TestPolicyCLIFault applies, reads, lists and deletes a Fault document
// on a real one-server cluster; what get prints applies again as it is.
func TestPolicyCLIFault(t *testing.T) {
	addr := policyAgent(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "fault.yaml")
	src := "kind: Fault\nname: api\nabort: {percent: 0.5, http_status: 503}\ndelay: {percent: 5, fixed: 200ms}\n" +
		"match:\n  headers:\n  - {name: x-chaos, exact: \"on\"}\n"
	if err := os.WriteFile(good, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: Fault\nname: api\nabort: {percent: 10, http_status: 200}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		return runCLI(t, append(args, "--http-addr", addr)...)
	}
	if out, err := run("policy", "apply", "-f", good); err != nil || !strings.Contains(out, `Fault "api" applied`) {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if _, err := run("policy", "apply", "-f", bad); err == nil || !strings.Contains(err.Error(), `Fault "api": abort.http_status: 200 must be between 400 and 599`) {
		t.Fatalf("apply of a bad Fault: %v", err)
	}
	out, err := run("policy", "get", "fault", "api", "--consistent")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: Fault", "percent: 0.5", "http_status: 503", "fixed: 200ms", "name: x-chaos"} {
		if !strings.Contains(out, want) {
			t.Fatalf("get printed\n%s\nwithout %q (the bad apply must not have replaced it)", out, want)
		}
	}
	again := filepath.Join(dir, "again.yaml")
	if err := os.WriteFile(again, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("policy", "apply", "-f", again); err != nil {
		t.Fatalf("apply of get's output: %v\n%s", err, out)
	}
	if out, err := run("policy", "list", "Fault", "--consistent"); err != nil || !strings.Contains(out, "Fault") || !strings.Contains(out, "api") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out, err := run("policy", "delete", "Fault", "api"); err != nil || !strings.Contains(out, `Fault "api" deleted`) {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if _, err := run("policy", "get", "Fault", "api", "--consistent"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("get after delete: %v", err)
	}
}

// TestPolicyCLIIdempotencyKey applies one file twice with the same
// --idempotency-key on a real cluster: the second run reports the first
// write's index and applies nothing.
func TestPolicyCLIIdempotencyKey(t *testing.T) {
	addr := policyAgent(t)
	file := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(file, []byte("kind: ServiceDefaults\nname: web\nprotocol: http\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var outs []string
	for i := 0; i < 2; i++ {
		out, err := runCLI(t, "policy", "apply", "-f", file, "--cas", "0", "--idempotency-key", "deploy-7", "--http-addr", addr)
		if err != nil {
			t.Fatalf("run %d: %v\n%s", i+1, err, out)
		}
		outs = append(outs, out)
	}
	if outs[0] != outs[1] || !strings.Contains(outs[0], "index ") {
		t.Fatalf("the retry answered\n%s\nthe first run\n%s", outs[1], outs[0])
	}
	if out, err := runCLI(t, "policy", "apply", "-f", file, "--idempotency-key", "bad key", "--http-addr", addr); err == nil || !strings.Contains(err.Error(), "--idempotency-key") {
		t.Fatalf("bad key: %v\n%s", err, out)
	}
}

// TestPolicyCLIOutcomeUnknown checks what the CLI says when the agent
// cannot tell whether a write was applied: plainly that it may or may not
// have been, the key to run it again with, and exit status 3.
func TestPolicyCLIOutcomeUnknown(t *testing.T) {
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		keys = append(keys, key)
		w.Header().Set("Idempotency-Key", key)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"raftstore: apply: outcome unknown: the write may or may not have been applied: leader lost","code":"outcome_unknown","idempotency_key":"` + key + `"}`))
	}))
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(file, []byte("kind: ServiceDefaults\nname: web\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"policy", "apply", "-f", file},
		{"policy", "delete", "ServiceDefaults", "web"},
		{"policy", "apply", "-f", file, "--idempotency-key", "mine-1"},
	} {
		keys = nil
		out, err := runCLI(t, append(args, "--http-addr", srv.URL)...)
		var ee exitError
		if !errors.As(err, &ee) || ee.code != exitOutcomeUnknown {
			t.Fatalf("%v: error %v, want exit status %d", args, err, exitOutcomeUnknown)
		}
		if len(keys) != 1 || keys[0] == "" {
			t.Fatalf("%v: the agent saw keys %q", args, keys)
		}
		if args[len(args)-1] == "mine-1" && keys[0] != "mine-1" {
			t.Fatalf("the agent saw key %q, want the flag's", keys[0])
		}
		if !strings.Contains(out, "MAY OR MAY NOT have been applied") || !strings.Contains(out, "--idempotency-key "+keys[0]) {
			t.Fatalf("%v: output does not say the outcome is unknown and how to retry:\n%s", args, out)
		}
	}
}
