package main

import (
	"strings"
	"testing"

	"github.com/meshwork/meshwork/api"
)

// TestMaintCLI drives `meshwork maint` against a real agent API: status,
// a service in and out of maintenance, the node, and an unknown service.
func TestMaintCLI(t *testing.T) {
	a := startTestAgent(t)
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append(args, "--http-addr", a.addr)...)
	}
	if _, err := runCLI(t, "services", "register", writeFile(t, "web.yaml", "name: web\nid: web-1\nport: 8080\n"), "--http-addr", a.addr); err != nil {
		t.Fatal(err)
	}
	if out, err := run("maint"); err != nil || !strings.Contains(out, "Nothing is in maintenance") {
		t.Fatalf("maint: %v\n%s", err, out)
	}
	if out, err := run("maint", "enable", "--service", "web-1", "--reason", "reindexing"); err != nil || !strings.Contains(out, "Put service web-1 in maintenance") {
		t.Fatalf("maint enable --service: %v\n%s", err, out)
	}
	if svc, _ := a.local.Service("web-1"); svc.Health != api.HealthCritical {
		t.Fatalf("web-1 is %s in maintenance, want critical", svc.Health)
	}
	out, err := run("maint")
	if err != nil || !regexpLine(out, "service", "web-1") || !strings.Contains(out, "reindexing") {
		t.Fatalf("maint status: %v\n%s", err, out)
	}
	if out, err := run("maint", "disable", "--service", "web-1"); err != nil || !strings.Contains(out, "Put service web-1 out of maintenance") {
		t.Fatalf("maint disable --service: %v\n%s", err, out)
	}
	if svc, _ := a.local.Service("web-1"); svc.Health != api.HealthPassing {
		t.Fatalf("web-1 is %s after maintenance, want passing", svc.Health)
	}
	if _, err := run("maint", "enable"); err != nil {
		t.Fatal(err)
	}
	if st := a.local.Maintenance(); st.Node == nil || !strings.Contains(st.Node.Reason, "no reason") {
		t.Fatalf("node maintenance = %+v", st.Node)
	}
	if _, err := run("maint", "disable"); err != nil || a.local.Maintenance().Node != nil {
		t.Fatalf("maint disable: %v, node still %+v", err, a.local.Maintenance().Node)
	}
	_, err = run("maint", "enable", "--service", "nope")
	if exitCode(err) != exitFailed || !strings.Contains(err.Error(), `service "nope" is not registered`) {
		t.Fatalf("maint of an unknown service: %v", err)
	}
	_, err = run("maint", "enabel")
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), `did you mean "enable"?`) {
		t.Fatalf("maint enabel: %v", err)
	}
}

// TestCompletion checks the dynamic completions against a real agent API:
// service names, local service IDs, policy kinds; and that the completion
// scripts are produced.
func TestCompletion(t *testing.T) {
	a := startTestAgent(t)
	if _, err := runCLI(t, "services", "register", writeFile(t, "web.yaml", "name: web\nid: web-1\nport: 8080\n"), "--http-addr", a.addr); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"catalog", "service", "--http-addr", a.addr, ""}, []string{"web"}, nil},
		{[]string{"services", "deregister", "--http-addr", a.addr, "w"}, []string{"web-1"}, nil},
		{[]string{"maint", "enable", "--http-addr", a.addr, "--service", ""}, []string{"web-1"}, nil},
		{[]string{"policy", "get", "Ser"}, []string{"ServiceDefaults", "ServiceIdentity"}, []string{"Route"}},
		{[]string{"force-leave", "--http-addr", a.addr, ""}, nil, []string{"n1"}}, // alive: not offered
	} {
		out, err := runCLI(t, append([]string{cobraComplete}, tc.args...)...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		lines := strings.Split(out, "\n")
		for _, w := range tc.want {
			if !contains(lines, w) {
				t.Errorf("%v: %q not offered:\n%s", tc.args, w, out)
			}
		}
		for _, w := range tc.not {
			if contains(lines, w) {
				t.Errorf("%v: %q offered:\n%s", tc.args, w, out)
			}
		}
	}
	// The scripts go to the process's stdout (cobra binds the completion
	// command to it when it is made): run the binary.
	bin := meshworkBinary(t)
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, code := runBinary(t, bin, nil, "completion", shell)
		if code != 0 || !strings.Contains(out, "__complete") || len(out) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes", shell, code, len(out))
		}
	}
	if out, code := runBinary(t, bin, nil, "completion", "tcsh"); code != exitUsage || !strings.Contains(out, `unknown command "tcsh"`) {
		t.Errorf("completion tcsh: exit %d\n%s", code, out)
	}
}

// cobraComplete is cobra's hidden command that the completion scripts call.
const cobraComplete = "__complete"

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}
