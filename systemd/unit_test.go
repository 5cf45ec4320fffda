// Tests of the unit and drop-ins with systemd's own tools. The booted-hosts
// scenario (test/nspawn) checks them again on a running systemd.
package systemd_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/agent/config"
)

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (scripts/deps.sh lint installs it)", name)
	}
}

// verifyRoot builds a root tree in which systemd-analyze verify can resolve
// the unit's dependencies and commands without installing anything: the
// distribution's units, and stand-ins for the binaries ExecStart and
// ExecReload name (verify checks that they exist and are executable).
func verifyRoot(t *testing.T, unit []byte) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	units := "/usr/lib/systemd/system"
	if _, err := os.Stat(units); err != nil {
		units = "/lib/systemd/system"
	}
	if out, err := exec.Command("cp", "-a", units, filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", units, err, out)
	}
	for _, bin := range []string{"usr/local/bin/meshwork", "bin/kill"} {
		if err := os.WriteFile(filepath.Join(root, bin), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/meshwork.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestUnitVerifies(t *testing.T) {
	requireTool(t, "systemd-analyze")
	unit, err := os.ReadFile("meshwork.service")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		unit     []byte
		wantBad  string // a word the complaint must contain; "" for a clean unit
		wantFail bool
	}{
		{name: "shipped unit", unit: unit},
		// The same check must be able to fail, or a clean result means nothing.
		{name: "unknown directive", unit: bytes.Replace(unit, []byte("[Service]\n"), []byte("[Service]\nProtectEverything=yes\n"), 1), wantBad: "ProtectEverything"},
		{name: "missing binary", unit: bytes.Replace(unit, []byte("/usr/local/bin/meshwork agent"), []byte("/usr/local/bin/absent agent"), 1), wantBad: "absent", wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := verifyRoot(t, tt.unit)
			out, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, "meshwork.service").CombinedOutput()
			text := strings.TrimSpace(string(out))
			if tt.wantBad == "" {
				if err != nil || text != "" {
					t.Fatalf("systemd-analyze verify: %v\n%s", err, text)
				}
				return
			}
			if !strings.Contains(text, tt.wantBad) {
				t.Errorf("verify said %q, want a complaint naming %q", text, tt.wantBad)
			}
			if tt.wantFail && err == nil {
				t.Errorf("verify exited 0 for a broken unit")
			}
		})
	}
}

var overall = regexp.MustCompile(`Overall exposure level for meshwork.service: (\d+\.\d+)`)

// The exposure score must stay at or below 2.5. The scenario measures it on a
// booted host as well; offline, the score comes from the unit file alone.
func TestSecurityExposure(t *testing.T) {
	requireTool(t, "systemd-analyze")
	out, _ := exec.Command("systemd-analyze", "security", "--no-pager", "--offline=yes", "./meshwork.service").CombinedOutput()
	m := overall.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exposure %.1f", score)
	if score > 2.5 {
		t.Errorf("exposure %.1f, want <= 2.5\n%s", score, out)
	}
}

// The sandbox must keep what the agent needs: these lines are load-bearing,
// and each says why it is there.
func TestUnitKeepsWhatTheAgentNeeds(t *testing.T) {
	unit, err := os.ReadFile("meshwork.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify",                        // the agent sends READY=1 (internal/sdnotify)
		"ExecReload=/bin/kill -HUP $MAINPID", // SIGHUP reloads services and checks
		"WatchdogSec=30s",                    // the main loop sends WATCHDOG=1 every 15s
		"Restart=on-failure",                 // which includes a watchdog timeout
		// Listeners and held connections across a restart (internal/sockets).
		"FileDescriptorStoreMax=16384",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", // netlink: sock_diag
		"StateDirectory=meshwork",
		"LogsDirectory=meshwork", // a writable home for the access log
		"ConfigurationDirectory=meshwork",
		"User=meshwork",
	} {
		if !bytes.Contains(unit, []byte("\n"+want+"\n")) {
			t.Errorf("meshwork.service lacks %q", want)
		}
	}
	// PrivateUsers= would make CAP_NET_BIND_SERVICE useless (the network
	// namespace belongs to the host's user namespace), and PrivateNetwork=
	// would cut the agent off.
	for _, banned := range []string{"PrivateUsers=yes", "PrivateNetwork=yes", "DynamicUser=yes"} {
		if bytes.Contains(unit, []byte(banned)) {
			t.Errorf("meshwork.service sets %s, which breaks the agent", banned)
		}
	}
}

// iniValues returns key=value lines of a systemd-style file, comments aside.
func iniValues(t *testing.T, name string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not key=value", name, line)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}

// The resolved drop-in must point at the agent's default DNS listener.
func TestResolvedDropInMatchesAgentDefaults(t *testing.T) {
	v := iniValues(t, "resolved-meshwork.conf")
	if want := fmt.Sprintf("127.0.0.1:%d", config.DefaultDNSPort); v["DNS"] != want {
		t.Errorf("DNS=%s, want %s (the agent's default DNS address)", v["DNS"], want)
	}
	if v["Domains"] != "~mesh" {
		t.Errorf("Domains=%s, want ~mesh (a routing-only domain)", v["Domains"])
	}
}

func TestSysctlDropIn(t *testing.T) {
	v := iniValues(t, "sysctl-meshwork.conf")
	for _, k := range []string{"net.core.rmem_max", "net.core.wmem_max"} {
		n, err := strconv.Atoi(v[k])
		// quic-go asks for 7 MiB receive and send buffers.
		if err != nil || n < 7<<20 {
			t.Errorf("%s = %q, want at least %d", k, v[k], 7<<20)
		}
	}
}

func TestSysusersParses(t *testing.T) {
	requireTool(t, "systemd-sysusers")
	root := t.TempDir()
	conf, err := os.ReadFile("meshwork.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-sysusers", "--dry-run", "--root="+root, "-")
	cmd.Stdin = bytes.NewReader(conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-sysusers --dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"group 'meshwork'", "user 'meshwork'"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("systemd-sysusers would not create %s:\n%s", want, out)
		}
	}
}
