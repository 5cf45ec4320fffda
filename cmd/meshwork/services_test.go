package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/agent/httpapi"
	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// testAgent is the real local state and HTTP API on a loopback port, fed
// into a catalog beside one remote node, as a running agent would be.
type testAgent struct {
	addr  string
	local *local.Manager
}

func startTestAgent(t *testing.T) *testAgent {
	t.Helper()
	store := catalog.NewStore()
	remote := catalog.Member{Status: catalog.StatusAlive, Record: catalog.Record{
		Node: "n2", Version: 1, Addr: "10.0.0.2", Server: true,
		Services: []catalog.Service{{ID: "web-2", Name: "web", Port: 8080, Tags: []string{"v2"}, Health: catalog.Critical}},
	}}
	reg := prometheus.NewRegistry()
	lm, err := local.New(local.Config{Node: "n1", DataDir: t.TempDir(), NodeInfo: local.NodeInfo{Addr: "127.0.0.1"}},
		local.Deps{Registerer: reg, Publisher: local.PublisherFunc(func(rec catalog.Record) {
			store.Publish([]catalog.Member{{Record: rec, Status: catalog.StatusAlive}, remote})
		})})
	if err != nil {
		t.Fatal(err)
	}
	if err := lm.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lm.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpapi.New(httpapi.Config{}, httpapi.Deps{Listener: l, Local: lm, Catalog: store, Gatherer: reg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testAgent{addr: l.Addr().String(), local: lm}
}

// run executes the CLI with args and returns what it printed and its error.
func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const webYAML = `name: web
id: web-1
port: 8080
ports: [{name: admin, port: 9090}]
tags: [v1]
check:
  ttl: 30s
  status: passing
`

func TestServicesCommands(t *testing.T) {
	a := startTestAgent(t)
	file := writeFile(t, "web.yaml", webYAML)

	out, err := run(t, "", "services", "register", file, "--http-addr", a.addr)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	if !strings.Contains(out, `Registered service "web-1"`) {
		t.Fatalf("register printed %q", out)
	}
	if _, ok := a.local.Service("web-1"); !ok {
		t.Fatal("the agent does not have web-1")
	}

	// JSON from stdin, and the address from the environment.
	t.Setenv(api.AddrEnv, a.addr)
	out, err = run(t, `{"name":"db","port":5432}`, "services", "register", "-", "--format", "json")
	if err != nil {
		t.Fatalf("register from stdin: %v\n%s", err, out)
	}
	var reg map[string]string
	if err := json.Unmarshal([]byte(out), &reg); err != nil || reg["registered"] != "db" {
		t.Fatalf("register --format json printed %q", out)
	}

	out, err = run(t, "", "services", "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "db") ||
		!strings.Contains(lines[2], "web-1") || !strings.Contains(lines[2], "8080,admin=9090") || !strings.Contains(lines[2], "passing") {
		t.Fatalf("services list:\n%s", out)
	}
	out, err = run(t, "", "services", "list", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var svcs []api.AgentService
	if err := json.Unmarshal([]byte(out), &svcs); err != nil || len(svcs) != 2 || svcs[1].Checks[0].Type != "ttl" {
		t.Fatalf("services list --format json: %v\n%s", err, out)
	}

	if out, err = run(t, "", "services", "deregister", "db"); err != nil || !strings.Contains(out, `Deregistered service "db"`) {
		t.Fatalf("deregister: %v\n%s", err, out)
	}
	_, err = run(t, "", "services", "deregister", "db")
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 404 || !strings.Contains(err.Error(), `service "db" is not registered`) {
		t.Fatalf("deregister unknown: %v", err)
	}
}

func TestServicesRegisterValidatesFirst(t *testing.T) {
	// Nothing listens at this address: a bad file must be refused before
	// any request is attempted.
	addr := closedAddr(t)
	tests := []struct{ name, content, want string }{
		{"invalid yaml value", "name: web\ncheck:\n  tcp: 127.0.0.1:1\n  interval: 0s\n", `service "web": check.interval: "0s" must be > 0`},
		{"unknown key", "name: web\nprot: 1\n", "line 2: field prot not found"},
		{"json bad port", `{"name":"web","port":70000}`, "port: 70000 is out of range"},
		{"empty", "", "the document is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "svc.yaml", tc.content)
			_, err := run(t, "", "services", "register", file, "--http-addr", addr)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), file+": ") {
				t.Fatalf("error = %v, want one starting with the file and containing %q", err, tc.want)
			}
			if errors.Is(err, api.ErrUnreachable) {
				t.Fatal("the definition was sent before being validated")
			}
		})
	}
	_, err := run(t, "", "services", "register", filepath.Join(t.TempDir(), "missing.yaml"), "--http-addr", addr)
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestCatalogCommands(t *testing.T) {
	a := startTestAgent(t)
	if _, err := run(t, "", "services", "register", writeFile(t, "web.yaml", webYAML), "--http-addr", a.addr); err != nil {
		t.Fatal(err)
	}

	out, err := run(t, "", "catalog", "services", "--http-addr", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if !regexpLine(out, "web", "2", "1", "v1,v2") {
		t.Fatalf("catalog services:\n%s", out)
	}

	out, err = run(t, "", "catalog", "nodes", "--http-addr", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if !regexpLine(out, "n1", "127.0.0.1", "alive", "client", "1") || !regexpLine(out, "n2", "10.0.0.2", "alive", "server", "1") {
		t.Fatalf("catalog nodes:\n%s", out)
	}

	out, err = run(t, "", "catalog", "service", "web", "--http-addr", a.addr, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var entries []api.CatalogServiceEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil || len(entries) != 2 {
		t.Fatalf("catalog service web --format json: %v\n%s", err, out)
	}
	out, err = run(t, "", "catalog", "service", "web", "--passing", "--http-addr", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "web-1") || strings.Contains(out, "web-2") {
		t.Fatalf("catalog service web --passing:\n%s", out)
	}
	out, err = run(t, "", "catalog", "service", "web", "--tag", "v2", "--http-addr", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "web-1") || !strings.Contains(out, "web-2") {
		t.Fatalf("catalog service web --tag v2:\n%s", out)
	}

	out, err = run(t, "", "members", "--http-addr", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if !regexpLine(out, "n1", "127.0.0.1", "alive", "client") {
		t.Fatalf("members:\n%s", out)
	}
	if _, err := run(t, "", "members", "--http-addr", a.addr, "--format", "yaml"); err == nil || !strings.Contains(err.Error(), `--format "yaml"`) {
		t.Fatalf("bad --format: %v", err)
	}
}

// TestUnreachableIsOneLine checks every command's error when no agent
// listens: one line, saying so, and nothing else printed by cobra.
func TestUnreachableIsOneLine(t *testing.T) {
	addr := closedAddr(t)
	file := writeFile(t, "web.yaml", webYAML)
	for _, args := range [][]string{
		{"members"},
		{"services", "list"},
		{"services", "register", file},
		{"services", "deregister", "web"},
		{"catalog", "services"},
		{"catalog", "nodes"},
		{"catalog", "service", "web"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, err := run(t, "", append(args, "--http-addr", addr)...)
			if !errors.Is(err, api.ErrUnreachable) {
				t.Fatalf("error = %v, want ErrUnreachable", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "cannot reach the agent at http://"+addr) ||
				!strings.Contains(msg, "connection refused") || strings.Count(msg, ":") > 4 {
				t.Fatalf("message %q is not one plain line", msg)
			}
			if out != "" {
				t.Fatalf("cobra printed %q besides the error", out)
			}
		})
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// regexpLine reports whether some line of out holds these fields in order,
// separated by blanks.
func regexpLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == strings.Join(fields, " ") ||
			strings.HasPrefix(strings.Join(strings.Fields(line), " "), strings.Join(fields, " ")+" ") {
			return true
		}
	}
	return false
}
