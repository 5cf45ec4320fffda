//go:build e2e

// Package release_test checks what `make release` hands to users: that
// scripts/release.sh makes the same bytes twice, that its signature verifies
// with the public key alone, and that the tarballs and .deb packages hold
// what docs/releases.md says, read with dpkg-deb and archive/tar.
package release_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// version is a pre-release, so that the .deb's version shows the semver to
// Debian mapping (1.2.3-rc.1 sorts before 1.2.3 as 1.2.3~rc.1).
const (
	version    = "1.2.3-rc.1"
	debVersion = "1.2.3~rc.1"
)

// repo is the repository's top directory.
func repo(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s is not installed (scripts/deps.sh release installs it)", n)
		}
	}
}

func git(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = repo(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// runRelease runs scripts/release.sh under sh with the given umask and
// environment, and returns its error and what it printed.
func runRelease(t *testing.T, umask string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "umask "+umask+" && exec scripts/release.sh")
	cmd.Dir = repo(t)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// release runs the script and fails the test if it fails.
func release(t *testing.T, umask string, env ...string) {
	t.Helper()
	if out, err := runRelease(t, umask, env...); err != nil {
		t.Fatalf("release.sh %s: %v\n%s", strings.Join(env, " "), err, out)
	}
}

// signingKey makes an ed25519 key pair for the test and returns the private
// key's path; the public key is beside it, with .pub.
func signingKey(t *testing.T, dir, name string) string {
	t.Helper()
	key := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return key
}

// verify checks sig over data as docs/releases.md tells users to: an
// allowed_signers line with the published public key, namespace "file".
func verify(t *testing.T, pubKey, data, sig string) error {
	t.Helper()
	pub, err := os.ReadFile(pubKey)
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(allowed, []byte(`release@meshwork namespaces="file" `+string(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "release@meshwork", "-n", "file", "-s", sig)
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}

// sums reads a SHA256SUMS file: name to hash.
func sums(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		hash, name, ok := strings.Cut(line, "  ")
		if !ok || len(hash) != 64 {
			t.Fatalf("%s: line %q is not sha256sum's", path, line)
		}
		m[name] = hash
	}
	return m
}

// commitInfo is HEAD when a test starts: what the artifacts it builds must
// name, read before the build so that a commit made meanwhile shows up as a
// mismatch rather than moving the expectation.
type commitInfo struct {
	commit string // 12 hex digits
	epoch  string // its commit time, Unix seconds
}

func head(t *testing.T) commitInfo {
	t.Helper()
	return commitInfo{commit: git(t, "rev-parse", "--short=12", "HEAD"), epoch: git(t, "log", "-1", "--format=%ct", "HEAD")}
}

func artifacts(arches ...string) []string {
	var names []string
	for _, a := range arches {
		names = append(names, "meshwork_"+version+"_"+a+".deb", "meshwork_"+version+"_linux_"+a+".tar.gz")
	}
	slices.Sort(names)
	return names
}

// The release of one commit and version is the same bytes when built again
// with another Go build cache, umask, temporary directory and time zone, and
// its signature verifies with the public key alone.
func TestReleaseReproducible(t *testing.T) {
	requireTools(t, "ssh-keygen", "dpkg-deb", "gzip", "tar", "sha256sum")
	h := head(t)
	dir := t.TempDir()
	key := signingKey(t, dir, "release-key")
	outA, outB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	tmpB := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmpB, 0o755); err != nil {
		t.Fatal(err)
	}

	release(t, "022", "VERSION="+version, "OUT="+outA, "ARCHES=amd64", "SIGNING_KEY="+key)
	// The second build compiles from a cold cache, so that equal sums
	// mean the toolchain made the same binary rather than copied it.
	release(t, "077", "VERSION=v"+version, "OUT="+outB, "ARCHES=amd64", "SIGNING_KEY="+key,
		"GOCACHE="+filepath.Join(dir, "gocache"), "TMPDIR="+tmpB, "TZ=Pacific/Auckland")

	a, b := sums(t, filepath.Join(outA, "SHA256SUMS")), sums(t, filepath.Join(outB, "SHA256SUMS"))
	t.Logf("SHA256SUMS:\n%v", a)
	if got, want := slices.Sorted(maps.Keys(a)), artifacts("amd64"); !slices.Equal(got, want) {
		t.Errorf("SHA256SUMS lists %v, want %v", got, want)
	}
	if !maps.Equal(a, b) {
		t.Errorf("two builds differ:\n%v\n%v", a, b)
	}
	// Ed25519 signatures are deterministic, and SSHSIG holds no time.
	if sigA, sigB := readFile(t, filepath.Join(outA, "SHA256SUMS.sig")), readFile(t, filepath.Join(outB, "SHA256SUMS.sig")); !bytes.Equal(sigA, sigB) {
		t.Errorf("two signatures of the same SHA256SUMS with the same key differ")
	}
	for _, out := range []string{outA, outB} {
		check := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
		check.Dir = out
		if b, err := check.CombinedOutput(); err != nil {
			t.Errorf("sha256sum --check in %s: %v\n%s", out, err, b)
		}
		entries, _ := os.ReadDir(out)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if want := append(artifacts("amd64"), "SHA256SUMS", "SHA256SUMS.sig"); !slices.Equal(names, slices.Sorted(slices.Values(want))) {
			t.Errorf("%s holds %v, want %v", out, names, want)
		}
	}

	t.Run("signature", func(t *testing.T) {
		data, sig := filepath.Join(outA, "SHA256SUMS"), filepath.Join(outA, "SHA256SUMS.sig")
		if err := verify(t, key+".pub", data, sig); err != nil {
			t.Fatalf("the signature does not verify: %v", err)
		}
		// The check can fail: a changed SHA256SUMS, or another key.
		b, err := os.ReadFile(data)
		if err != nil {
			t.Fatal(err)
		}
		tampered := filepath.Join(t.TempDir(), "SHA256SUMS")
		if err := os.WriteFile(tampered, bytes.Replace(b, []byte("meshwork_"), []byte("meshwerk_"), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := verify(t, key+".pub", tampered, sig); err == nil {
			t.Errorf("a changed SHA256SUMS verifies")
		}
		other := signingKey(t, t.TempDir(), "other-key")
		if err := verify(t, other+".pub", data, sig); err == nil {
			t.Errorf("the signature verifies with another key")
		}
	})

	t.Run("deb", func(t *testing.T) { checkDeb(t, filepath.Join(outA, "meshwork_"+version+"_amd64.deb"), "amd64", h) })
	t.Run("tarball", func(t *testing.T) {
		checkTarball(t, filepath.Join(outA, "meshwork_"+version+"_linux_amd64.tar.gz"), "amd64", h)
	})
	t.Run("same binary", func(t *testing.T) {
		fromDeb := extractDeb(t, filepath.Join(outA, "meshwork_"+version+"_amd64.deb"), "./usr/bin/meshwork")
		fromTar := tarFiles(t, filepath.Join(outA, "meshwork_"+version+"_linux_amd64.tar.gz"))["meshwork"]
		if !bytes.Equal(fromDeb, fromTar) {
			t.Errorf("the .deb's /usr/bin/meshwork (%d bytes) is not the tarball's meshwork (%d bytes)", len(fromDeb), len(fromTar))
		}
	})
}

// Both architectures: the arm64 artifacts are arm64, and the amd64 ones are
// the bytes of a build of amd64 alone.
func TestReleaseBothArches(t *testing.T) {
	requireTools(t, "dpkg-deb", "gzip", "tar", "sha256sum")
	h := head(t)
	dir := t.TempDir()
	amd64Only, both := filepath.Join(dir, "amd64"), filepath.Join(dir, "both")
	release(t, "022", "VERSION="+version, "OUT="+amd64Only, "ARCHES=amd64")
	release(t, "022", "VERSION="+version, "OUT="+both)

	one, all := sums(t, filepath.Join(amd64Only, "SHA256SUMS")), sums(t, filepath.Join(both, "SHA256SUMS"))
	t.Logf("SHA256SUMS:\n%v", all)
	if got, want := slices.Sorted(maps.Keys(all)), artifacts("amd64", "arm64"); !slices.Equal(got, want) {
		t.Errorf("SHA256SUMS lists %v, want %v", got, want)
	}
	for name, hash := range one {
		if all[name] != hash {
			t.Errorf("%s: %s alone, %s beside arm64", name, hash, all[name])
		}
	}
	if _, err := os.Stat(filepath.Join(both, "SHA256SUMS.sig")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SHA256SUMS.sig without SIGNING_KEY: %v", err)
	}
	checkDeb(t, filepath.Join(both, "meshwork_"+version+"_arm64.deb"), "arm64", h)
	checkTarball(t, filepath.Join(both, "meshwork_"+version+"_linux_arm64.tar.gz"), "arm64", h)
}

// Bad input is refused before anything is built, naming what was wrong, and
// OUT keeps what it held.
func TestReleaseRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "meshwork_0.9.0_amd64.deb")
	if err := os.WriteFile(foreign, []byte("an earlier build"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, want string
		env        []string
	}{
		{"no version", "VERSION is required", []string{"VERSION=", "OUT=" + filepath.Join(dir, "x")}},
		{"not semver", "VERSION=1.2 is not a semantic version", []string{"VERSION=1.2", "OUT=" + filepath.Join(dir, "x")}},
		{"unknown arch", "unknown architecture 386", []string{"VERSION=1.2.3", "ARCHES=amd64 386", "OUT=" + filepath.Join(dir, "x")}},
		{"missing key", "no such readable file", []string{"VERSION=1.2.3", "SIGNING_KEY=" + filepath.Join(dir, "absent"), "OUT=" + filepath.Join(dir, "x")}},
		{"another build in OUT", "holds meshwork_0.9.0_amd64.deb", []string{"VERSION=1.2.3", "OUT=" + dir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runRelease(t, "022", tt.env...)
			if err == nil {
				t.Fatalf("release.sh %v succeeded:\n%s", tt.env, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("release.sh %v said %q, want %q", tt.env, out, tt.want)
			}
		})
	}
	if b, err := os.ReadFile(foreign); err != nil || string(b) != "an earlier build" {
		t.Errorf("the earlier build in OUT: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused release made OUT: %v", err)
	}
}

// checkDeb reads the package with dpkg-deb: control fields, the file list
// with owners and modes, the unit as rewritten, the scripts and the binary.
func checkDeb(t *testing.T, deb, arch string, h commitInfo) {
	t.Helper()
	fields := map[string]string{}
	for _, f := range []string{"Package", "Version", "Architecture", "Maintainer", "Section", "Homepage", "Recommends", "Depends"} {
		out, err := exec.Command("dpkg-deb", "--field", deb, f).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", f, err)
		}
		fields[f] = strings.TrimSpace(string(out))
	}
	for f, want := range map[string]string{
		"Package": "meshwork", "Version": debVersion, "Architecture": arch, "Section": "net",
		"Homepage": "https://github.com/meshwork/meshwork", "Recommends": "systemd", "Depends": "",
	} {
		if fields[f] != want {
			t.Errorf("%s: %s %q, want %q", filepath.Base(deb), f, fields[f], want)
		}
	}
	if !strings.Contains(fields["Maintainer"], "<") {
		t.Errorf("Maintainer %q: want a name and an address", fields["Maintainer"])
	}

	// dpkg-deb -c: mode, owner/group, size, date, time, path.
	list := exec.Command("dpkg-deb", "--contents", deb)
	list.Env = append(os.Environ(), "TZ=UTC")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("dpkg-deb --contents: %v", err)
	}
	sec, _ := strconv.ParseInt(h.epoch, 10, 64)
	stamp := time.Unix(sec, 0).UTC().Format("2006-01-02 15:04")
	files := map[string]string{} // path to mode, for files
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("dpkg-deb --contents line %q", line)
		}
		mode, owner, date, path := f[0], f[1], f[3]+" "+f[4], f[5]
		if owner != "root/root" {
			t.Errorf("%s is owned by %s, want root/root", path, owner)
		}
		if date != stamp {
			t.Errorf("%s dated %s, want the commit's time %s (UTC)", path, date, stamp)
		}
		if mode[0] == 'd' {
			continue
		}
		files[path] = mode
	}
	want := map[string]string{
		"./usr/bin/meshwork":                              "-rwxr-xr-x",
		"./usr/lib/systemd/system/meshwork.service":       "-rw-r--r--",
		"./usr/lib/sysusers.d/meshwork.conf":              "-rw-r--r--",
		"./usr/lib/systemd/resolved.conf.d/meshwork.conf": "-rw-r--r--",
		"./usr/lib/sysctl.d/60-meshwork.conf":             "-rw-r--r--",
		"./usr/share/doc/meshwork/copyright":              "-rw-r--r--",
		"./usr/share/doc/meshwork/README.md":              "-rw-r--r--",
		"./usr/share/doc/meshwork/CHANGELOG.md":           "-rw-r--r--",
	}
	if !maps.Equal(files, want) {
		t.Errorf("%s holds\n%v\nwant\n%v", filepath.Base(deb), files, want)
	}
	if !strings.Contains(string(out), " ./etc/meshwork/\n") {
		t.Errorf("%s lacks the directory /etc/meshwork", filepath.Base(deb))
	}

	// The unit: the repository's, with the binary at /usr/bin.
	source, err := os.ReadFile(filepath.Join(repo(t), "systemd/meshwork.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := extractDeb(t, deb, "./usr/lib/systemd/system/meshwork.service")
	if wantUnit := bytes.ReplaceAll(source, []byte("/usr/local/bin/meshwork"), []byte("/usr/bin/meshwork")); !bytes.Equal(unit, wantUnit) {
		t.Errorf("the packaged unit is not systemd/meshwork.service with /usr/bin/meshwork:\n%s", unit)
	}
	for _, line := range []string{"\nExecStart=/usr/bin/meshwork agent --config-dir /etc/meshwork\n", "\nExecReload=/usr/bin/meshwork validate /etc/meshwork\n"} {
		if !bytes.Contains(unit, []byte(line)) {
			t.Errorf("the packaged unit lacks %q", strings.TrimSpace(line))
		}
	}
	verifyUnit(t, unit)
	for name, src := range map[string]string{
		"./usr/lib/sysusers.d/meshwork.conf":              "systemd/meshwork.sysusers",
		"./usr/lib/systemd/resolved.conf.d/meshwork.conf": "systemd/resolved-meshwork.conf",
		"./usr/lib/sysctl.d/60-meshwork.conf":             "systemd/sysctl-meshwork.conf",
	} {
		b, err := os.ReadFile(filepath.Join(repo(t), src))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(extractDeb(t, deb, name), b) {
			t.Errorf("%s is not %s", name, src)
		}
	}

	// The maintainer scripts: dpkg runs them with sh; they make the user
	// and reload systemd, and never start or enable the agent.
	ctrl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	scripts := map[string][]string{
		"postinst": {"systemd-sysusers /usr/lib/sysusers.d/meshwork.conf", "systemctl daemon-reload"},
		"prerm":    {"systemctl stop meshwork.service"},
		"postrm":   {"systemctl daemon-reload"},
	}
	for name, wants := range scripts {
		b, err := os.ReadFile(filepath.Join(ctrl, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctrl, name)).CombinedOutput(); err != nil {
			t.Errorf("%s does not parse: %v\n%s", name, err, out)
		}
		for _, w := range wants {
			if !bytes.Contains(b, []byte(w)) {
				t.Errorf("%s lacks %q", name, w)
			}
		}
		for _, banned := range []string{"start meshwork", "enable meshwork", "restart meshwork", "enable --now"} {
			if bytes.Contains(b, []byte(banned)) {
				t.Errorf("%s runs %q: the agent must not start from the package", name, banned)
			}
		}
	}
	checkBinary(t, extractDeb(t, deb, "./usr/bin/meshwork"), arch, h)
}

// verifyUnit runs systemd-analyze verify on the packaged unit, in a root
// where it sits where the package puts it and its commands exist.
func verifyUnit(t *testing.T, unit []byte) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Logf("systemd-analyze is not installed: the packaged unit is not verified")
		return
	}
	root := t.TempDir()
	units := "/usr/lib/systemd/system"
	if _, err := os.Stat(units); err != nil {
		units = "/lib/systemd/system"
	}
	for _, d := range []string{"usr/bin", "bin", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", units, filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", units, err, out)
	}
	for _, bin := range []string{"usr/bin/meshwork", "bin/kill"} {
		if err := os.WriteFile(filepath.Join(root, bin), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/system/meshwork.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, "meshwork.service").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify of the packaged unit: %v\n%s", err, out)
	}
}

// checkTarball reads the tarball with archive/tar: the gzip header carries
// no name or time, the entries are in order, owned by 0 and dated at the
// commit.
func checkTarball(t *testing.T, path, arch string, h commitInfo) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header: name %q, time %v; want neither (gzip -n)", zr.Name, zr.ModTime)
	}
	var names []string
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: owner %d/%d (%q/%q), want 0/0 with no names", hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
		if strconv.FormatInt(hdr.ModTime.Unix(), 10) != h.epoch {
			t.Errorf("%s: time %v, want the commit's (%s)", hdr.Name, hdr.ModTime.UTC(), h.epoch)
		}
		wantMode := int64(0o644)
		if hdr.Typeflag == tar.TypeDir || hdr.Name == "meshwork" {
			wantMode = 0o755
		}
		if hdr.Mode&0o7777 != wantMode {
			t.Errorf("%s: mode %o, want %o", hdr.Name, hdr.Mode, wantMode)
		}
	}
	want := []string{"CHANGELOG.md", "LICENSE", "README.md", "meshwork", "systemd/",
		"systemd/meshwork.service", "systemd/meshwork.sysusers", "systemd/resolved-meshwork.conf", "systemd/sysctl-meshwork.conf"}
	if !slices.Equal(names, want) {
		t.Errorf("%s lists %v, want %v", filepath.Base(path), names, want)
	}
	files := tarFiles(t, path)
	unit, err := os.ReadFile(filepath.Join(repo(t), "systemd/meshwork.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files["systemd/meshwork.service"], unit) {
		t.Errorf("the tarball's unit is not systemd/meshwork.service")
	}
	checkBinary(t, files["meshwork"], arch, h)
}

// checkBinary checks that bin is a static linux/arch executable and, when it
// runs here, that it reports the release's version and the commit.
func checkBinary(t *testing.T, bin []byte, arch string, h commitInfo) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("the binary is not ELF: %v", err)
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != machine {
		t.Errorf("the %s binary is for %v", arch, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the %s binary asks for a dynamic loader: want CGO_ENABLED=0", arch)
		}
	}
	if arch != hostArch(t) {
		return
	}
	path := filepath.Join(t.TempDir(), "meshwork")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "version", "--format", "json").Output()
	if err != nil {
		t.Fatalf("meshwork version: %v", err)
	}
	var got struct{ Version, Commit string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("meshwork version --format json: %v: %s", err, out)
	}
	if got.Version != version || got.Commit != h.commit {
		t.Errorf("meshwork version = %+v, want %s and %s", got, version, h.commit)
	}
}

func hostArch(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOHOSTARCH").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// extractDeb returns one file of a package's data.
func extractDeb(t *testing.T, deb, name string) []byte {
	t.Helper()
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	data, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile: %v", err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s has no %s: %v", filepath.Base(deb), name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tarFiles returns the regular files of a .tar.gz by name.
func tarFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if files[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
}
