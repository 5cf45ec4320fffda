package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

// semver is the grammar of semver.org 2.0.0, its pre-release and build
// identifiers loosened to their character sets.
var semver = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

func buildInfo(settings ...string) *debug.BuildInfo {
	info := &debug.BuildInfo{}
	for i := 0; i+1 < len(settings); i += 2 {
		info.Settings = append(info.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
	}
	return info
}

func TestResolveVersion(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name                    string
		stampedV, stampedC      string
		info                    *debug.BuildInfo
		wantVersion, wantCommit string
	}{
		{name: "release stamp", stampedV: "1.4.0", stampedC: "0123456789ab", info: buildInfo("vcs.revision", "ffffffffffff"),
			wantVersion: "1.4.0", wantCommit: "0123456789ab"},
		{name: "stamp with a v", stampedV: "v2.0.0-rc.1", stampedC: "0123456789ab",
			wantVersion: "2.0.0-rc.1", wantCommit: "0123456789ab"},
		{name: "dev stamp from version.sh", stampedV: "1.4.1-dev+0123456789ab.dirty", stampedC: "0123456789ab",
			wantVersion: "1.4.1-dev+0123456789ab.dirty", wantCommit: "0123456789ab"},
		{name: "go build in a clean tree", info: buildInfo("vcs.revision", rev, "vcs.modified", "false"),
			wantVersion: "0.0.0-dev+0123456789ab", wantCommit: "0123456789ab"},
		{name: "go build in a modified tree", info: buildInfo("vcs.revision", rev, "vcs.modified", "true"),
			wantVersion: "0.0.0-dev+0123456789ab.dirty", wantCommit: "0123456789ab"},
		{name: "go build outside git", info: buildInfo("GOOS", "linux"),
			wantVersion: "0.0.0-dev", wantCommit: "unknown"},
		{name: "no build information", wantVersion: "0.0.0-dev", wantCommit: "unknown"},
		{name: "commit stamped alone", stampedC: "abcdefabcdef", info: buildInfo("vcs.revision", rev, "vcs.modified", "true"),
			wantVersion: "0.0.0-dev+abcdefabcdef", wantCommit: "abcdefabcdef"},
		// A stamp that is not semver is reported as given: scripts/version.sh
		// refuses to make one for a build, and tests stamp their own.
		{name: "free-form stamp", stampedV: "e2e-1-20260101", info: buildInfo("vcs.revision", rev),
			wantVersion: "e2e-1-20260101", wantCommit: "0123456789ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, c := resolveVersion(tt.stampedV, tt.stampedC, tt.info)
			if v != tt.wantVersion || c != tt.wantCommit {
				t.Errorf("resolveVersion(%q, %q) = %q, %q; want %q, %q", tt.stampedV, tt.stampedC, v, c, tt.wantVersion, tt.wantCommit)
			}
			if tt.stampedV == "" && !semver.MatchString(v) {
				t.Errorf("unstamped version %q is not a semantic version", v)
			}
		})
	}
}

// stamp sets the link-time values for one test.
func stamp(t *testing.T, v, c string) {
	t.Helper()
	oldV, oldC := version, commit
	version, commit = v, c
	t.Cleanup(func() { version, commit = oldV, oldC })
}

func TestVersionCommand(t *testing.T) {
	stamp(t, "1.4.0", "0123456789ab")

	out, err := runCLI(t, "version", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var info versionInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("version --format json: %v: %q", err, out)
	}
	if info.Version != "1.4.0" || info.Commit != "0123456789ab" || !strings.HasPrefix(info.Go, "go") || !strings.HasPrefix(info.Platform, "linux/") {
		t.Errorf("version --format json = %+v", info)
	}

	text, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text, "meshwork 1.4.0\ncommit   0123456789ab\ngo       go") {
		t.Errorf("version = %q", text)
	}

	if _, err := runCLI(t, "version", "--format", "yaml"); err == nil || !strings.Contains(err.Error(), `--format "yaml"`) {
		t.Errorf("version --format yaml: %v, want an error naming the format", err)
	}
	if _, err := runCLI(t, "version", "extra"); err == nil {
		t.Errorf("version extra: no error for an argument")
	}
}

// The root command's --version prints the same version.
func TestRootVersionFlag(t *testing.T) {
	stamp(t, "2.0.0-rc.1", "0123456789ab")
	out, err := runCLI(t, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != "meshwork version 2.0.0-rc.1" {
		t.Errorf("--version = %q", got)
	}
}

// scripts/version.sh makes the stamps of the Makefile and the release
// script: a semantic version and the commit of the tree.
func TestVersionScript(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git tree: %v", err)
	}
	script := func(env ...string) (string, error) {
		cmd := exec.Command("../../scripts/version.sh")
		cmd.Env = append(cmd.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return stderr.String(), err
		}
		return strings.TrimSpace(string(out)), nil
	}

	tests := []struct {
		version string
		want    string // "" when the script must refuse it
	}{
		{"1.4.0", "1.4.0"},
		{"v1.4.0", "1.4.0"},
		{"2.0.0-rc.1", "2.0.0-rc.1"},
		{"1.0.0+build.7", "1.0.0+build.7"},
		{"1.4", ""},
		{"01.4.0", ""},
		{"1.4.0-", ""},
		{"latest", ""},
	}
	for _, tt := range tests {
		out, err := script("VERSION=" + tt.version)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("VERSION=%s: printed %q, want a refusal", tt.version, out)
		case tt.want == "" && !strings.Contains(out, tt.version):
			t.Errorf("VERSION=%s: refusal %q does not name the version", tt.version, out)
		case tt.want != "" && (err != nil || out != tt.want):
			t.Errorf("VERSION=%s: %q, %v; want %q", tt.version, out, err, tt.want)
		}
	}

	dev, err := script("VERSION=")
	if err != nil {
		t.Fatalf("version.sh: %v: %s", err, dev)
	}
	c := strings.TrimSpace(string(head))
	if !semver.MatchString(dev) || !strings.Contains(dev, "-dev+"+c) {
		t.Errorf("version.sh = %q, want a semantic -dev version naming commit %s", dev, c)
	}
	if got, err := exec.Command("../../scripts/version.sh", "commit").Output(); err != nil || strings.TrimSpace(string(got)) != c {
		t.Errorf("version.sh commit = %q, %v; want %s", got, err, c)
	}
}
