//go:build e2e

package netns

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/ca/raftca"
	"github.com/meshwork/meshwork/internal/keytls"
	"github.com/meshwork/meshwork/raftstore"
)

// The attack suite of issue 24: a cluster with ACLs on and default deny,
// attacked by a real unprivileged user on its hosts, by a rogue node that
// holds the gossip key and a legitimate bootstrap of its own, through a
// snapshot restore, and at the API's edges. Every attack must be refused
// with a clear 403 or the documented error, and nothing it touched may
// change. The hosts:
//
//	h1  server; the caller of the rogue scenario (its app is this test)
//	h2  server; runs web (hello, tag real)
//	h3  server
//	h4  client; runs web (hello, tag real)
//	h5  client; the rogue: registers web (tag rogue) in front of a
//	    counting server, with an agent token that writes node h5 only
//	h6  client started only to spend a bootstrap token (the replay case)
//
// What was refused, and the 0 of 1,000 figure, are logged as "FIGURE ..."
// lines; docs/security.md ("Attack suite") lists them.

const (
	// rogueCalls is the number of calls to web.service.mesh with and
	// without a Split; callWorkers make them, bounded by callBound.
	rogueCalls  = 1000
	callWorkers = 8
	callBound   = 3 * time.Minute
	// slowClients trickle their bodies at once; slowBound bounds the
	// test's wait for each (the agent's body timeout is 30 s).
	slowClients = 20
	slowBound   = 90 * time.Second
)

// attackCluster is the cluster under attack.
type attackCluster struct {
	t       *testing.T
	nw      *Net
	servers []*Agent // h1-h3
	web     *Agent   // h4
	rogue   *Agent   // h5
	enc, ck string
	sk      string // the servers' server_key

	secrets    string            // 0755 directory of the secret files, each 0600
	mgmt       string            // the management token's secret
	mgmtFile   string            // ... in a file, for --token-file
	agentFiles map[string]string // node -> its agent token's file
	agentToken map[string]string // node -> its agent token's secret

	rogueApp *countingApp // the rogue's web instance
}

// startAttackCluster starts the servers with ACLs on and an
// initial_management token, makes a policy and an agent token for every
// node through the API, then starts the clients with their tokens and CA
// bootstrap tokens.
func startAttackCluster(t *testing.T) *attackCluster {
	t.Helper()
	nw := New(t, 6)
	c := &attackCluster{t: t, nw: nw, enc: Key(), ck: Key(), sk: Key(), agentFiles: map[string]string{}, agentToken: map[string]string{}}
	c.secrets = openDir(t, t.TempDir())
	var err error
	if c.mgmt, err = acl.NewSecret(); err != nil {
		t.Fatal(err)
	}
	c.mgmtFile = c.writeSecret("management.token", c.mgmt)
	stateKey, err := ca.NewStateKey()
	if err != nil {
		t.Fatal(err)
	}
	stateKeyFile := c.writeSecret("ca-state.key", stateKey)
	for _, h := range nw.Hosts {
		s, err := acl.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		c.agentToken[h.Name] = s
		c.agentFiles[h.Name] = c.writeSecret(h.Name+".agent.token", s)
	}

	hello := helloBinary(t)
	join := []string{nw.Hosts[0].Addr, nw.Hosts[1].Addr, nw.Hosts[2].Addr}
	for i, h := range nw.Hosts[:3] {
		// Every server seals the CA's keys with the same state key, and
		// holds the server key, which no client agent has.
		extra := c.aclConfig(h, true) + fmt.Sprintf("ca:\n  state_key_file: %s\nserver_key: %q\n", stateKeyFile, c.sk)
		if i == 1 {
			h.Start(hello, "-addr", fmt.Sprintf("127.0.0.1:%d", webPort), "-name", "web-"+h.Name)
			extra += taggedWeb(h, "real")
		}
		c.servers = append(c.servers, h.StartAgent(AgentOptions{Encrypt: c.enc, ClusterKey: c.ck, Join: join, Server: true, BootstrapExpect: 3, Extra: extra}))
	}
	h1 := c.servers[0]
	Eventually(t, 90*time.Second, "the initial management token works on h1", func() error {
		out, err := c.op(h1, "acl", "token", "self")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := c.op(h1, "ca", "roots")
		return err
	})

	// One policy and one token per node: its node, and web where it runs.
	runsWeb := map[string]bool{"h2": true, "h4": true}
	for _, h := range nw.Hosts {
		rules := fmt.Sprintf("name: agent-%s\nrules:\n  node: {%s: write}\n", h.Name, h.Name)
		if runsWeb[h.Name] {
			rules += "  service: {web: write}\n"
		}
		c.mustOp(h1, "acl", "policy", "create", "-f", c.writeFile("agent-"+h.Name+".yaml", rules))
		c.mustOp(h1, "acl", "token", "create", "--secret-file", c.agentFiles[h.Name], "--policy", "agent-"+h.Name, "--description", "agent "+h.Name)
	}

	h4, h5 := nw.Hosts[3], nw.Hosts[4]
	h4.Start(hello, "-addr", fmt.Sprintf("127.0.0.1:%d", webPort), "-name", "web-"+h4.Name)
	c.web = h4.StartAgent(AgentOptions{Encrypt: c.enc, ClusterKey: c.ck, Join: join, Token: c.caToken(h4.Name), Extra: c.aclConfig(h4, false) + taggedWeb(h4, "real")})
	c.rogueApp = startCountingApp(t, h5, "web-"+h5.Name)
	c.rogue = h5.StartAgent(AgentOptions{Encrypt: c.enc, ClusterKey: c.ck, Join: join, Token: c.caToken(h5.Name), Extra: c.aclConfig(h5, false) + taggedWeb(h5, "rogue")})

	// The web instances on h2 and h4 hold svc/web; the rogue's leaf names
	// its node only.
	for _, a := range []*Agent{c.servers[1], c.web} {
		Eventually(t, 90*time.Second, a.Host.Name+" holds svc/web", func() error {
			l, err := c.leaf(a)
			if err != nil {
				return err
			}
			if !contains(l.IDs, "spiffe://meshwork.local/svc/web") {
				return fmt.Errorf("leaf names %v", l.IDs)
			}
			return nil
		})
	}
	Eventually(t, 90*time.Second, "the rogue holds a leaf", func() error {
		_, err := c.leaf(c.rogue)
		return err
	})
	// Calls need an intention; the caller (h1) calls as its node.
	c.mustApply(h1, "kind: Intention\nname: web\nsources:\n  - name: \"*\"\n    action: allow\n")
	return c
}

// aclConfig is the acl section of h's agent: on, default deny, its own
// token, and on servers the initial management token.
func (c *attackCluster) aclConfig(h *Host, server bool) string {
	s := fmt.Sprintf("acl:\n  enabled: true\n  default_policy: deny\n  tokens:\n    agent_file: %s\n", c.agentFiles[h.Name])
	if server {
		s += fmt.Sprintf("    initial_management: %q\n", c.mgmt)
	}
	return s
}

// taggedWeb registers web on h, port 8080, with tag and a health check.
func taggedWeb(h *Host, tag string) string {
	return fmt.Sprintf(`services:
  - name: web
    id: web-%s
    port: %d
    tags: [%s]
    checks:
      - http: http://127.0.0.1:%d/health
        interval: 1s
        timeout: 1s
`, h.Name, webPort, tag, webPort)
}

// openDir makes dir and its parent traversable by every user (0755), as
// /etc and /var/lib are, so that only the modes of the files in it decide
// who reads them.
func openDir(t *testing.T, dir string) string {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeSecret writes a secret alone in a 0600 file of the secrets
// directory, as the Ansible role installs one.
func (c *attackCluster) writeSecret(name, secret string) string {
	p := filepath.Join(c.secrets, name)
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// writeFile writes a document for the operator (root).
func (c *attackCluster) writeFile(name, content string) string {
	p := filepath.Join(c.t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// op runs a CLI command on a's host as root with the management token.
func (c *attackCluster) op(a *Agent, args ...string) (string, error) {
	return a.CLI(append(args, "--token-file", c.mgmtFile)...)
}

func (c *attackCluster) mustOp(a *Agent, args ...string) string {
	c.t.Helper()
	out, err := c.op(a, args...)
	if err != nil {
		c.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// opJSON runs op with --format json and decodes its output.
func (c *attackCluster) opJSON(a *Agent, out any, args ...string) error {
	return a.JSON(out, append(args, "--token-file", c.mgmtFile)...)
}

// mustApply applies policy documents as the operator.
func (c *attackCluster) mustApply(a *Agent, src string) {
	c.t.Helper()
	c.mustOp(a, "policy", "apply", "-f", c.writeFile("policy.yaml", src))
}

// caToken makes a one-time CA bootstrap token for node, as the operator.
func (c *attackCluster) caToken(node string) string {
	c.t.Helper()
	return strings.TrimSpace(c.mustOp(c.servers[0], "ca", "token", node))
}

// leafInfo is what `meshwork ca cert --format json` shows.
type leafInfo struct {
	IDs      []string `json:"ids"`
	Withheld []string `json:"withheld"`
}

func (c *attackCluster) leaf(a *Agent) (leafInfo, error) {
	var l leafInfo
	err := c.opJSON(a, &l, "ca", "cert")
	return l, err
}

// api calls a's HTTP API from inside its host with token ("" for none)
// and Host header host ("" for the address), and returns the status and
// body.
func (c *attackCluster) api(a *Agent, method, path, token, host string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://127.0.0.1:8500"+path, body)
	if err != nil {
		return 0, nil, err
	}
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("X-Meshwork-Token", token)
	}
	resp, err := agentHTTP(a).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// metric sums the samples of a Prometheus metric of a's API (read with the
// management token) whose labels contain labels.
func (c *attackCluster) metric(a *Agent, name, labels string) (float64, error) {
	code, b, err := c.api(a, http.MethodGet, "/v1/metrics", c.mgmt, "", nil)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("metrics of %s: %d %s", a.Host.Name, code, b)
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		if labels != "" && !strings.Contains(line, labels) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics of %s: %q: %v", a.Host.Name, line, err)
		}
		sum += v
	}
	return sum, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ---- the unprivileged local user ----

// localUser is a real account made for the test, with no group but its
// own, and a copy of the binary it may run, as /usr/bin/meshwork is.
type localUser struct {
	name     string
	uid, gid string
	dir      string // 0755, its files 0644: what the user may read
	bin      string
}

// newLocalUser adds a system user with useradd and removes it in Cleanup.
func newLocalUser(t *testing.T) *localUser {
	t.Helper()
	name := randomTag("mwatk")[:13]
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "meshwork-attack-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lu := &localUser{name: name, uid: u.Uid, gid: u.Gid, dir: dir, bin: filepath.Join(dir, "meshwork")}
	b, err := os.ReadFile(Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lu.bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return lu
}

// file writes a file the user may read.
func (u *localUser) file(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(u.dir, name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs a command in h as the user, with an empty environment (no
// token from the test's), and returns its output and exit status.
func (u *localUser) run(h *Host, name string, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--reuid=" + u.uid, "--regid=" + u.gid, "--clear-groups", "env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent", name}, args...)
	out, err := h.Run(ctx, "setpriv", full...)
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		code = -1
		out += err.Error()
	}
	return out, code
}

// meshwork runs the CLI in h as the user.
func (u *localUser) meshwork(h *Host, args ...string) (string, int) {
	return u.run(h, u.bin, args...)
}

// ---- the rogue's web instance ----

// countingApp is an HTTP server run by the test inside a host, on the
// port web's instances serve: it counts every request but the health
// checks, which is how the rogue's share of web's calls is counted where
// it would arrive.
type countingApp struct {
	name  string
	calls atomic.Int64
}

func startCountingApp(t *testing.T, h *Host, name string) *countingApp {
	t.Helper()
	l, err := h.Listen(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", webPort))
	if err != nil {
		t.Fatal(err)
	}
	app := &countingApp{name: name}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			fmt.Fprintln(w, "ok")
			return
		}
		app.calls.Add(1)
		fmt.Fprintf(w, "hello from %s (rogue), you are %s\n", name, r.RemoteAddr)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return app
}

// callResult counts the answers of a batch of calls by the instance that
// served them.
type callResult struct {
	served map[string]int // "web-h2" ... from hello's answer
	failed int
	errs   []string // the first few errors
}

// callWeb makes n calls to web.service.mesh from h, as an application on
// h would: it asks h's agent's DNS for the name, then connects to the
// address answered (a VIP of h's agent), one connection per call, with
// callWorkers at once; bounded by n and callBound.
func callWeb(t *testing.T, h *Host, n int, tag string) callResult {
	t.Helper()
	var vip string
	Eventually(t, 30*time.Second, "web.service.mesh answers a VIP on "+h.Name, func() error {
		ips, err := lookupA(h, "web.service.mesh.")
		if err != nil {
			return err
		}
		if len(ips) != 1 {
			return fmt.Errorf("answers %v", ips)
		}
		ip, err := netip.ParseAddr(ips[0])
		if err != nil || !netip.MustParsePrefix("127.240.0.0/12").Contains(ip) {
			return fmt.Errorf("web.service.mesh is %v, want a VIP in 127.240.0.0/12", ips)
		}
		vip = ips[0]
		return nil
	})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return h.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true, // one connection, so one choice of instance, per call
	}}
	res := callResult{served: map[string]int{}}
	var mu sync.Mutex
	var next atomic.Int64
	deadline := time.Now().Add(callBound)
	var wg sync.WaitGroup
	for range callWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) || time.Now().After(deadline) {
					return
				}
				resp, err := client.Get(fmt.Sprintf("http://%s:%d/%s-%d", vip, webPort, tag, i))
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mu.Lock()
				if err != nil {
					res.failed++
					if len(res.errs) < 3 {
						res.errs = append(res.errs, err.Error())
					}
				} else {
					res.served[servedByAny(string(body))]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if total := res.failed + res.sum(); total != n {
		t.Fatalf("made %d of %d calls within %s", total, n, callBound)
	}
	return res
}

func (r callResult) sum() int {
	n := 0
	for _, v := range r.served {
		n += v
	}
	return n
}

// servedByAny returns the instance name in an answer of hello or of the
// counting app, "?" when there is none.
func servedByAny(body string) string {
	const p = "hello from "
	i := strings.Index(body, p)
	if i < 0 {
		return "?"
	}
	rest := body[i+len(p):]
	if j := strings.IndexByte(rest, ' '); j > 0 {
		return rest[:j]
	}
	return "?"
}

// ---- the suite ----

// TestAttackSuite runs every attack of issue 24 against one cluster with
// ACLs on and default deny.
func TestAttackSuite(t *testing.T) {
	needTools(t, "setpriv", "useradd", "userdel")
	c := startAttackCluster(t)
	u := newLocalUser(t)
	cases := []struct {
		name string
		run  func(t *testing.T, c *attackCluster, u *localUser)
	}{
		{"an unprivileged local user is refused every write and secret", localUserAttacks},
		{"a rogue node with the gossip key receives none of web's calls", rogueNodeAttacks},
		{"a rogue node's own credentials cannot write through the server port", serverPortAttacks},
		{"a rogue node cannot speak Raft to the servers", raftPortAttacks},
		{"a used bootstrap token stays used after a restore", tokenReplayThroughRestore},
		{"a snapshot through a client agent holds no private CA keys", clientSnapshotAttacks},
		{"the API's edges", edgeAttacks},
	}
	for _, tc := range cases {
		ok := t.Run(tc.name, func(t *testing.T) {
			c.t = t
			tc.run(t, c, u)
		})
		c.t = t
		if !ok {
			break // the cluster may be in no state for the next case
		}
	}
}

// checkRefused checks that a command was refused: a non-zero exit status
// and output that holds want, the words naming what was missing.
func checkRefused(t *testing.T, what, out string, code int, want string) {
	t.Helper()
	if code == 0 {
		t.Errorf("%s: exit status 0, want a refusal naming %q; output: %s", what, want, out)
		return
	}
	if !strings.Contains(out, want) {
		t.Errorf("%s: exit status %d, output %q does not name %q", what, code, strings.TrimSpace(out), want)
		return
	}
	figure(t, "refused: %s (exit %d): %s", what, code, lastLine(out))
}

func firstLine(s string) string {
	return strings.Split(strings.TrimSpace(s), "\n")[0]
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// localUserAttacks: a real unprivileged account on a server (h1) and on a
// client (h4) runs every command of the list with no token; each
// is refused with a 403 that names the permission, and nothing changes.
// The anonymous token still reads the catalog, and DNS answers. The
// agent's secret files and data are closed to the user.
func localUserAttacks(t *testing.T, c *attackCluster, u *localUser) {
	if out, code := u.run(c.web.Host, "id", "-u"); code != 0 || strings.TrimSpace(out) != u.uid || u.uid == "0" {
		t.Fatalf("the commands do not run as the user %s (uid %s): %q, exit %d", u.name, u.uid, out, code)
	}
	allow := u.file(t, "allow.yaml", []byte("kind: IntentionDefaults\nname: default\naction: allow\n"))
	split := u.file(t, "split.yaml", []byte("kind: Split\nname: web\nsplits:\n  - weight: 100\n    subset: {tags: [rogue]}\n"))
	svc := u.file(t, "svc.yaml", []byte("name: web\nid: web-evil\nport: 9999\n"))
	backupFile := filepath.Join(t.TempDir(), "backup.snap")
	c.mustOp(c.servers[0], "snapshot", "save", backupFile)
	b, err := os.ReadFile(backupFile)
	if err != nil {
		t.Fatal(err)
	}
	backup := u.file(t, "backup.snap", b)
	saveTo := filepath.Join(u.dir, "stolen.snap")

	var indexBefore uint64
	if st, err := c.policyStatus(c.servers[0]); err != nil {
		t.Fatal(err)
	} else {
		indexBefore = st.Index
	}

	denied := func(perm string) string { return "permission denied: token lacks " + perm }
	attacks := []struct {
		what string
		args []string
		want string
	}{
		{"policy apply of an allow-all IntentionDefaults", []string{"policy", "apply", "-f", allow}, denied(`policy:write on "IntentionDefaults"`)},
		{"policy apply of a Split to the rogue's subset", []string{"policy", "apply", "-f", split}, denied(`policy:write on "Split"`)},
		{"policy delete of the Intention web", []string{"policy", "delete", "Intention", "web"}, denied(`intention:write on "web"`)},
		{"services register of web", []string{"services", "register", svc}, denied(`service:write on "web"`)},
		{"services deregister of web-h4 (registered by root)", []string{"services", "deregister", "web-h4"}, denied(`service:write on "web"`)},
		{"operator raft remove-peer h2", []string{"operator", "raft", "remove-peer", "h2"}, denied(`operator:write on "raft"`)},
		{"snapshot save", []string{"snapshot", "save", saveTo}, denied(`operator:read on "snapshot"`)},
		{"snapshot restore of a valid backup", []string{"snapshot", "restore", backup}, denied(`operator:write on "snapshot"`)},
		{"ca rotate", []string{"ca", "rotate"}, denied(`ca:write on "rotate"`)},
		{"ca token", []string{"ca", "token", "h9"}, denied(`ca:write on "token"`)},
		{"keyring list", []string{"keyring", "list"}, denied(`operator:read on "keyring"`)},
		{"keyring install", []string{"keyring", "install", Key()}, denied(`operator:write on "keyring"`)},
	}
	for _, a := range []*Agent{c.servers[0], c.web} {
		for _, at := range attacks {
			if at.what == "services deregister of web-h4 (registered by root)" && a != c.web {
				continue // web-h4 is h4's
			}
			out, code := u.meshwork(a.Host, at.args...)
			checkRefused(t, fmt.Sprintf("uid %s on %s: %s", u.uid, a.Host.Name, at.what), out, code, at.want)
		}
	}
	// A made-up token is refused as unknown, not as the anonymous one.
	out, code := u.meshwork(c.web.Host, "policy", "apply", "-f", allow, "--token", "mwt_"+strings.Repeat("A", 43))
	checkRefused(t, fmt.Sprintf("uid %s on h4: policy apply with a made-up token", u.uid), out, code, "ACL token not found")
	if _, err := os.Stat(saveTo); err == nil {
		t.Errorf("the refused snapshot save wrote %s", saveTo)
	}

	// Nothing changed: the policy's index, the peers, web-h4, the keys.
	st, err := c.policyStatus(c.servers[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Index != indexBefore {
		t.Errorf("the policy index moved from %d to %d during the refused attacks", indexBefore, st.Index)
	}
	var peers []raftstore.Peer
	if err := c.opJSON(c.web, &peers, "operator", "raft", "list-peers"); err != nil || len(peers) != 3 {
		t.Errorf("raft peers after the attacks: %+v, %v", peers, err)
	}
	var svcs []api.AgentService
	if err := c.opJSON(c.web, &svcs, "services", "list"); err != nil {
		t.Error(err)
	} else if len(svcs) != 1 || svcs[0].ID != "web-h4" {
		t.Errorf("h4's services after the attacks: %+v", svcs)
	}
	if _, err := c.op(c.servers[0], "policy", "get", "Intention", "web"); err != nil {
		t.Errorf("the Intention web after the attacks: %v", err)
	}
	var keys struct {
		Keys map[string]int `json:"keys"`
	}
	if err := c.opJSON(c.web, &keys, "keyring", "list"); err != nil || len(keys.Keys) != 1 {
		t.Errorf("keyring after the attacks: %v: %v", err, keys.Keys)
	}
	if _, ok := keys.Keys[c.enc]; ok {
		t.Errorf("keyring list shows the gossip key itself, even to the management token")
	}

	// The anonymous token reads the catalog, and DNS answers.
	out, code = u.meshwork(c.web.Host, "catalog", "service", "web", "--format", "json")
	var es []api.CatalogServiceEntry
	if code != 0 || json.Unmarshal([]byte(out), &es) != nil || len(es) != 3 {
		t.Errorf("uid %s: catalog service web: exit %d, %q; want the 3 instances", u.uid, code, out)
	} else {
		figure(t, "allowed: uid %s reads the catalog without a token: %d instances of web", u.uid, len(es))
	}
	ips, err := lookupA(c.web.Host, "web.service.mesh.")
	if err != nil || len(ips) != 1 {
		t.Errorf("DNS on h4: %v, %v", ips, err)
	} else {
		figure(t, "allowed: DNS on h4 answers web.service.mesh: %v", ips)
	}

	// The files of the agents: config (with encrypt, cluster_key and on
	// servers initial_management), the agent token files, and the data
	// directories. Their directories are opened to every user first, as
	// /etc and /var/lib are, so that each file's own mode decides.
	userCannotRead(t, c, u)
}

// userCannotRead tries, as the user, to read every file of a server's and
// a client's agent that holds a secret or state.
func userCannotRead(t *testing.T, c *attackCluster, u *localUser) {
	for _, a := range []*Agent{c.servers[0], c.web} {
		openDir(t, filepath.Dir(a.Config))
		files := []string{a.Config, c.agentFiles[a.Host.Name], c.mgmtFile}
		err := filepath.WalkDir(a.DataDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(a.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Errorf("%s's data dir %s has mode %04o, want 0700", a.Host.Name, a.DataDir, st.Mode().Perm())
		}
		// The data dir's 0700 (the unit's StateDirectoryMode) is what keeps
		// the user out of it; files in it that would be readable without it
		// are named in the figure.
		var open []string
		for _, f := range files[3:] {
			if fi, err := os.Stat(f); err == nil && fi.Mode().Perm()&0o044 != 0 {
				open = append(open, fmt.Sprintf("%s %04o", strings.TrimPrefix(f, a.DataDir+"/"), fi.Mode().Perm()))
			}
		}
		refused := 0
		for _, f := range files {
			out, code := u.run(a.Host, "head", "-c", "1", f)
			if code == 0 || !strings.Contains(out, "Permission denied") {
				t.Errorf("uid %s read %s (exit %d): %q", u.uid, f, code, out)
				continue
			}
			refused++
		}
		figure(t, "refused: uid %s reading %d files of %s's agent (config, token files, data dir): Permission denied for %d; data dir files with group or other read bits, behind its 0700: %v",
			u.uid, len(files), a.Host.Name, refused, open)
		// validate names no exposed secret in the harness's files.
		if out, err := a.CLI("validate", a.Config); err != nil || strings.Contains(out, "warning") {
			t.Errorf("validate %s: %v: %s", a.Config, err, out)
		}
	}
}

func (c *attackCluster) policyStatus(a *Agent) (raftstore.PolicyStatus, error) {
	var st raftstore.PolicyStatus
	err := c.opJSON(a, &st, "policy", "status")
	return st, err
}

// rogueNodeAttacks: h5 holds the gossip key, the cluster key, a bootstrap
// token of its own and an agent token that writes node h5 only. It
// registers web (in its config) in front of a server that counts what
// reaches it. 1,000 calls from h1's application to web.service.mesh reach
// the real instances only; so do 1,000 more under a Split that an
// operator points at the rogue's subset; and so do calls under a
// ServiceIdentity that lists the real nodes. Its own attempts to register
// web or apply a Split through its API are refused.
func rogueNodeAttacks(t *testing.T, c *attackCluster, _ *localUser) {
	caller := c.servers[0]
	l, err := c.leaf(c.rogue)
	if err != nil {
		t.Fatal(err)
	}
	if contains(l.IDs, "spiffe://meshwork.local/svc/web") || !contains(l.IDs, "spiffe://meshwork.local/node/h5") || !contains(l.Withheld, "web") {
		t.Fatalf("the rogue's leaf names %v, withheld %v; want node/h5 only, web withheld", l.IDs, l.Withheld)
	}
	figure(t, "refused: the rogue's leaf (meshwork ca cert on h5) names %v; withheld: %v", l.IDs, l.Withheld)

	// The rogue is in the catalog as an instance of web, passing.
	Eventually(t, 60*time.Second, "h1 sees web on h2, h4 and h5, passing", func() error {
		var es []api.CatalogServiceEntry
		if err := c.opJSON(caller, &es, "catalog", "service", "web", "--passing"); err != nil {
			return err
		}
		nodes := map[string]bool{}
		for _, e := range es {
			nodes[e.Node] = true
		}
		if len(es) != 3 || !nodes["h2"] || !nodes["h4"] || !nodes["h5"] {
			return fmt.Errorf("passing instances on %v", nodes)
		}
		return nil
	})
	// Through its own API, with its own token, it may not take web.
	rogueSvc := c.writeFile("web.yaml", "name: web\nid: web-h5-api\nport: 8080\n")
	out, err := c.rogue.CLI("services", "register", rogueSvc, "--token-file", c.agentFiles["h5"])
	checkRefused(t, "h5's own token: services register web", out, exitCode(err), `permission denied: token lacks service:write on "web"`)
	splitAll := c.writeFile("split.yaml", "kind: Split\nname: web\nsplits:\n  - weight: 100\n    subset: {tags: [rogue]}\n")
	out, err = c.rogue.CLI("policy", "apply", "-f", splitAll, "--token-file", c.agentFiles["h5"])
	checkRefused(t, "h5's own token: policy apply of a Split to its subset", out, exitCode(err), `permission denied: token lacks policy:write on "Split"`)

	Eventually(t, 60*time.Second, "calls from h1 reach web", func() error {
		r := callWeb(t, caller.Host, 5, "warmup")
		if r.failed > 0 {
			return fmt.Errorf("%d of 5 warm-up calls failed: %v", r.failed, r.errs)
		}
		return nil
	})
	skippedBefore, err := c.metric(caller, "meshwork_transport_skipped_instances_total", `reason="certificate_lacks_service"`)
	if err != nil {
		t.Fatal(err)
	}
	base := c.rogueApp.calls.Load()
	r := callWeb(t, caller.Host, rogueCalls, "plain")
	rogue := c.rogueApp.calls.Load() - base
	figure(t, "rogue node, no Split: the rogue received %d of %d calls; served %v; %d failed %v", rogue, rogueCalls, r.served, r.failed, r.errs)
	if rogue != 0 || r.served["web-h5"] != 0 {
		t.Errorf("the rogue received %d calls (answered %d), want 0", rogue, r.served["web-h5"])
	}
	if real := r.served["web-h2"] + r.served["web-h4"]; real != rogueCalls {
		t.Errorf("the real instances served %d of %d calls (%v, %d failed: %v)", real, rogueCalls, r.served, r.failed, r.errs)
	}
	skipped, err := c.metric(caller, "meshwork_transport_skipped_instances_total", `reason="certificate_lacks_service"`)
	if err != nil {
		t.Fatal(err)
	}
	if skipped <= skippedBefore {
		t.Errorf("h1 skipped the rogue %v times (%v before): was it a candidate at all?", skipped, skippedBefore)
	}
	figure(t, "rogue node, no Split: h1 skipped it %v times (certificate_lacks_service)", skipped-skippedBefore)

	// An operator's Split sends half of web's traffic to the rogue's
	// subset: that half goes nowhere, the other half to the real ones.
	c.mustApply(caller, "kind: Split\nname: web\nsplits:\n  - weight: 50\n    subset: {tags: [rogue]}\n  - weight: 50\n    subset: {tags: [real]}\n")
	Eventually(t, 30*time.Second, "h1 applies the Split", func() error {
		r := callWeb(t, caller.Host, 20, "split-warmup")
		if r.failed == 0 {
			return fmt.Errorf("no call of 20 failed: the Split is not in force yet (%v)", r.served)
		}
		return nil
	})
	base = c.rogueApp.calls.Load()
	r = callWeb(t, caller.Host, rogueCalls, "split")
	rogue = c.rogueApp.calls.Load() - base
	figure(t, "rogue node, Split 50/50 to its subset: the rogue received %d of %d calls; served %v; %d failed (the rogue's share, sent nowhere)", rogue, rogueCalls, r.served, r.failed)
	if rogue != 0 || r.served["web-h5"] != 0 {
		t.Errorf("under the Split the rogue received %d calls, want 0", rogue)
	}
	if r.failed == 0 || r.served["web-h2"]+r.served["web-h4"] == 0 {
		t.Errorf("under the 50/50 Split: %v served, %d failed; want both halves", r.served, r.failed)
	}
	c.mustOp(caller, "policy", "delete", "Split", "web")

	// A ServiceIdentity of web that lists the real nodes: the caller never
	// even dials the rogue for web.
	notAllowedBefore, err := c.metric(caller, "meshwork_transport_skipped_instances_total", `reason="node_not_allowed"`)
	if err != nil {
		t.Fatal(err)
	}
	c.mustApply(caller, "kind: ServiceIdentity\nname: web\nnodes: [h2, h4]\n")
	base = c.rogueApp.calls.Load()
	const siCalls = 200
	r = callWeb(t, caller.Host, siCalls, "identity")
	rogue = c.rogueApp.calls.Load() - base
	notAllowed, err := c.metric(caller, "meshwork_transport_skipped_instances_total", `reason="node_not_allowed"`)
	if err != nil {
		t.Fatal(err)
	}
	figure(t, "rogue node, ServiceIdentity web [h2, h4]: the rogue received %d of %d calls; served %v; %d failed; skipped as node_not_allowed %v times", rogue, siCalls, r.served, r.failed, notAllowed-notAllowedBefore)
	if rogue != 0 || r.served["web-h2"]+r.served["web-h4"] != siCalls {
		t.Errorf("under the ServiceIdentity: rogue %d, served %v, %d failed %v", rogue, r.served, r.failed, r.errs)
	}
	if notAllowed <= notAllowedBefore {
		t.Errorf("h1 never skipped the rogue as node_not_allowed under the ServiceIdentity")
	}
	c.mustOp(caller, "policy", "delete", "ServiceIdentity", "web")
}

// serverPortAttacks: the rogue (h5) calls the servers' RPC port itself,
// with what root on any agent host holds: the cluster key (it mints a
// leaf as h5, and one under a server's name) or only the mesh leaf of its
// own bootstrap. It asks the leader to store a management token whose
// secret it chose, and to write a key of the CA's state. The servers
// decide the calls of agents that are not servers by the token they carry
// (raftstore/rpcauth.go), and a server is a caller with a leaf of the
// server authority, which only the holders of server_key can mint: all
// three are refused.
func serverPortAttacks(t *testing.T, c *attackCluster, _ *localUser) {
	key, err := keytls.ParseKey(c.ck)
	if err != nil {
		t.Fatal(err)
	}
	minted, err := keytls.New(keytls.Config{Key: key, NodeName: c.rogue.Host.Name})
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := keytls.New(keytls.Config{Key: key, NodeName: c.servers[1].Host.Name})
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(c.rogue.DataDir, "ca", "leaf.pem"))
	if err != nil {
		t.Fatal(err)
	}
	meshLeaf, err := tls.X509KeyPair(pem, pem) // the file holds the chain and the key
	if err != nil {
		t.Fatal(err)
	}
	creds := []struct {
		name string
		tls  *tls.Config
	}{
		{"a leaf minted from the cluster key", minted.ClientConfig(raftstore.ALPNRPC)},
		{"the mesh leaf of its own bootstrap", &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{raftstore.ALPNRPC},
			// Whatever CAs the server's request names: the rogue sends
			// its mesh leaf, and need not check whom it calls.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &meshLeaf, nil },
			InsecureSkipVerify:   true}},
		{"a leaf minted from the cluster key under a server's name", impostor.ClientConfig(raftstore.ALPNRPC)},
	}
	for _, cr := range creds {
		secret, err := acl.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		id, err := acl.NewID()
		if err != nil {
			t.Fatal(err)
		}
		tok := &acl.Token{AccessorID: id, SecretHash: acl.HashSecret(secret), Type: acl.TypeManagement, Description: "planted by h5", CreateTime: time.Now()}
		body, _ := json.Marshal(map[string]any{"txns": []raftstore.Txn{{{Type: raftstore.OpACLTokenSet, ACL: &raftstore.ACLOp{Token: tok}}}}})
		var answers []string
		for _, s := range c.servers {
			code, b, err := rpcPost(c.rogue.Host, s.Host.Addr+":7947", cr.tls, "/rpc/v1/apply", body)
			answers = append(answers, fmt.Sprintf("%s: %d %s %v", s.Host.Name, code, bytes.TrimSpace(b), err))
		}
		code, b, err := c.api(c.servers[0], http.MethodGet, "/v1/acl/token/self", secret, "", nil)
		if err == nil && code == http.StatusOK {
			t.Errorf("h5 with %s stored a management token of its own through the server port (answers %v)", cr.name, answers)
			c.op(c.servers[0], "acl", "token", "delete", id)
			continue
		}
		figure(t, "refused: h5 with %s, POST /rpc/v1/apply of a management token: %v; token/self: %d %s", cr.name, answers, code, errorOf(b))

		// A key of the CA's state: a ledger shard of used bootstrap tokens,
		// whose loss would let used tokens be used again.
		kv, _ := json.Marshal(map[string]any{"txns": []raftstore.Txn{{{Type: raftstore.OpKVSet, KVKey: "ca/tokens/00", Value: []byte("{}")}}}})
		for _, s := range c.servers {
			code, b, err := rpcPost(c.rogue.Host, s.Host.Addr+":7947", cr.tls, "/rpc/v1/apply", kv)
			if err == nil && code == http.StatusOK && !bytes.Contains(b, []byte(`"forbidden"`)) && !bytes.Contains(b, []byte(`"not_leader"`)) {
				t.Errorf("h5 with %s wrote a key of the CA's state through %s: %d %s", cr.name, s.Host.Name, code, b)
			}
		}
	}
}

// rpcPost posts body to path on a server's RPC port from h, with tlsCfg.
func rpcPost(h *Host, addr string, tlsCfg *tls.Config, path string, body []byte) (int, []byte, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			raw, err := h.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, tlsCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		},
	}}
	resp, err := client.Post("https://"+addr+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	var compact bytes.Buffer
	if json.Compact(&compact, b) == nil {
		b = compact.Bytes()
	}
	return resp.StatusCode, b, err
}

// raftPortAttacks: the rogue (h5) speaks Raft to every server, over
// meshwork-raft/1 with a leaf minted from the cluster key under a
// server's name: an AppendEntries of term 0, which a server that accepts
// the connection answers with its term, changing nothing (a real attacker
// would send a higher term and depose the leader). Only a leaf of the
// server authority gets an answer: the test, which holds server_key,
// checks that with its own server leaf, so that a refusal is the
// certificate's and nothing else.
func raftPortAttacks(t *testing.T, c *attackCluster, _ *localUser) {
	key, err := keytls.ParseKey(c.ck)
	if err != nil {
		t.Fatal(err)
	}
	serverKey, err := keytls.ParseKey(c.sk)
	if err != nil {
		t.Fatal(err)
	}
	name := c.servers[1].Host.Name
	impostor, err := keytls.New(keytls.Config{Key: key, NodeName: name})
	if err != nil {
		t.Fatal(err)
	}
	server, err := keytls.New(keytls.Config{Key: key, ServerKey: serverKey, NodeName: name})
	if err != nil {
		t.Fatal(err)
	}
	// Neither checks whom it calls: only the server's check refuses.
	asImpostor, asServer := impostor.PeerClientConfig(raftstore.ALPNRaft), server.PeerClientConfig(raftstore.ALPNRaft)
	asImpostor.VerifyPeerCertificate, asServer.VerifyPeerCertificate = nil, nil
	for _, s := range c.servers {
		addr := s.Host.Addr + ":7947"
		resp, err := raftAppend(c.rogue.Host, addr, asImpostor)
		if err == nil {
			t.Errorf("%s answered the Raft call of a cluster-key leaf named %s: term %d", s.Host.Name, name, resp.Term)
			continue
		}
		ctl, cerr := raftAppend(c.rogue.Host, addr, asServer)
		if cerr != nil || ctl.Term == 0 {
			t.Errorf("%s did not answer the Raft call of a server leaf either (%+v, %v): the refusal proves nothing", s.Host.Name, ctl, cerr)
			continue
		}
		figure(t, "refused: h5 speaks Raft to %s with a cluster-key leaf named %s: %v; with a server leaf: answered, term %d", s.Host.Name, name, err, ctl.Term)
	}
	// Still one cluster, with its leader.
	if out, err := c.op(c.servers[0], "operator", "raft", "list-peers"); err != nil || !strings.Contains(out, "leader") {
		t.Errorf("the Raft peers after the attack: %v: %s", err, out)
	}
}

// raftAppend sends an AppendEntries of term 0 from h to the server at
// addr, over Raft's own transport, with tlsCfg.
func raftAppend(h *Host, addr string, tlsCfg *tls.Config) (*raft.AppendEntriesResponse, error) {
	trans := raft.NewNetworkTransport(&raftDialer{h: h, tls: tlsCfg, closed: make(chan struct{})}, 1, 10*time.Second, io.Discard)
	defer trans.Close()
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("h5"), Addr: []byte(h.Addr + ":7947")}}
	var resp raft.AppendEntriesResponse
	err := trans.AppendEntries("target", raft.ServerAddress(addr), req, &resp)
	return &resp, err
}

// raftDialer is a raft.StreamLayer that only dials, from h's namespace,
// with mutual TLS.
type raftDialer struct {
	h      *Host
	tls    *tls.Config
	closed chan struct{}
	once   sync.Once
}

func (d *raftDialer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, err := d.h.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, d.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

func (d *raftDialer) Accept() (net.Conn, error) {
	<-d.closed
	return nil, net.ErrClosed
}

func (d *raftDialer) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func (d *raftDialer) Addr() net.Addr { return &net.TCPAddr{IP: net.ParseIP(d.h.Addr), Port: 7947} }

// exitCode is the exit status of a command's error.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// tokenReplayThroughRestore: a bootstrap token for h6 is made, a backup
// saved, the token used by h6's agent, the backup restored; h6's agent,
// started again from nothing with the same token, is refused: the token
// stays used.
func tokenReplayThroughRestore(t *testing.T, c *attackCluster, _ *localUser) {
	h1, h6 := c.servers[0], c.nw.Hosts[5]
	tok := c.caToken(h6.Name)
	backup := filepath.Join(t.TempDir(), "before.snap")
	c.mustOp(h1, "snapshot", "save", backup)
	join := []string{c.servers[0].Host.Addr}
	a := h6.StartAgent(AgentOptions{Encrypt: c.enc, ClusterKey: c.ck, Join: join, Token: tok, Extra: c.aclConfig(h6, false) + "ports: {tunnel: -1}\n"})
	Eventually(t, 90*time.Second, "h6 trades its token for a leaf", func() error {
		l, err := c.leaf(a)
		if err != nil {
			return err
		}
		if !contains(l.IDs, "spiffe://meshwork.local/node/h6") {
			return fmt.Errorf("leaf names %v", l.IDs)
		}
		return nil
	})
	a.Proc.Signal(syscall.SIGTERM)
	if _, ok := a.Proc.Wait(40 * time.Second); !ok {
		t.Fatal("h6's agent did not stop")
	}

	var restored raftstore.TxnResult
	if err := c.opJSON(h1, &restored, "snapshot", "restore", backup); err != nil {
		t.Fatal(err)
	}
	figure(t, "token replay: backup saved before h6 spent its token, restored after it (index %d)", restored.Index)
	Eventually(t, 60*time.Second, "the cluster serves after the restore", func() error {
		_, err := c.policyStatus(c.web)
		return err
	})

	// h6 again, with nothing of its own but the same token.
	if err := os.RemoveAll(a.DataDir); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	Eventually(t, 90*time.Second, "h6's second use of the token is refused", func() error {
		b, err := os.ReadFile(a.Proc.Log)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte("bootstrap token already used")) {
			return errors.New("no refusal logged yet")
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "bootstrap token already used") {
				figure(t, "refused: h6's second bootstrap with the used token after the restore: %s", strings.TrimSpace(line))
				break
			}
		}
		return nil
	})
	if l, err := c.leaf(a); err == nil {
		t.Errorf("h6 holds a leaf after replaying its token: %v", l.IDs)
	}
	a.Proc.Signal(syscall.SIGTERM)
	a.Proc.Wait(40 * time.Second)
}

// backupContents is a decoded backup: its header, and its state's keys.
type backupContents struct {
	header struct {
		Version   int      `json:"version"`
		Private   string   `json:"private"`
		OmittedKV []string `json:"omitted_kv"`
	}
	keys []string
	raw  []byte // the decompressed backup
}

// decodeBackup reads a backup as docs/policy.md describes it: gzip, one
// JSON header line, then the state machine's serialisation.
func decodeBackup(t *testing.T, file string) backupContents {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var bc backupContents
	bc.raw = raw
	br := bufio.NewReader(bytes.NewReader(raw))
	head, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatalf("%s: header: %v", file, err)
	}
	if err := json.Unmarshal(head, &bc.header); err != nil {
		t.Fatalf("%s: header %q: %v", file, head, err)
	}
	var state struct {
		KV []raftstore.KVEntry `json:"kv"`
	}
	if err := json.NewDecoder(br).Decode(&state); err != nil {
		t.Fatalf("%s: state: %v", file, err)
	}
	for _, e := range state.KV {
		bc.keys = append(bc.keys, e.Key)
	}
	return bc
}

// privateKeys returns the keys of bc under the servers' private prefixes
// and those bound to them.
func (bc backupContents) privateKeys() []string {
	prefixes := append(append([]string{raftstore.SecretPrefix}, raftca.PrivateKV...), raftca.PrivateBoundKV...)
	var out []string
	for _, k := range bc.keys {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// clientSnapshotAttacks: an operator token that may save snapshots, used
// through a client agent, gets a backup without the servers' private
// state; the same token through a server gets the whole one (so the check
// can see keys where there are some). No backup holds a token's secret.
func clientSnapshotAttacks(t *testing.T, c *attackCluster, _ *localUser) {
	h1 := c.servers[0]
	c.mustOp(h1, "acl", "policy", "create", "-f", c.writeFile("backup.yaml", "name: backup\nrules:\n  operator: {snapshot: read}\n"))
	var tok api.ACLToken
	if err := c.opJSON(h1, &tok, "acl", "token", "create", "--policy", "backup", "--description", "backups"); err != nil {
		t.Fatal(err)
	}
	opFile := c.writeSecret("backup.token", tok.SecretID)
	save := func(a *Agent) backupContents {
		t.Helper()
		f := filepath.Join(t.TempDir(), a.Host.Name+".snap")
		if out, err := a.CLI("snapshot", "save", f, "--token-file", opFile); err != nil {
			t.Fatalf("snapshot save on %s: %v: %s", a.Host.Name, err, out)
		}
		return decodeBackup(t, f)
	}
	client, server := save(c.web), save(h1)
	figure(t, "snapshot through client h4 with an operator token: version %d, private %q, omitted %v, %d keys, private keys %v",
		client.header.Version, client.header.Private, client.header.OmittedKV, len(client.keys), client.privateKeys())
	figure(t, "snapshot through server h1 with the same token: version %d, private %q, %d keys, %d of them private",
		server.header.Version, server.header.Private, len(server.keys), len(server.privateKeys()))
	if client.header.Version != 2 || client.header.Private != "omitted" || len(client.privateKeys()) != 0 {
		t.Errorf("the client's backup: version %d, private %q, private keys %v; want version 2, omitted, none",
			client.header.Version, client.header.Private, client.privateKeys())
	}
	if !contains(server.keys, "ca/authority") || server.header.Private == "omitted" {
		t.Errorf("the server's backup holds no ca/authority (keys %v): the check would see nothing", server.keys)
	}
	secrets := []string{c.mgmt, tok.SecretID}
	for _, s := range c.agentToken {
		secrets = append(secrets, s)
	}
	for _, s := range secrets {
		for name, bc := range map[string]backupContents{"client": client, "server": server} {
			if bytes.Contains(bc.raw, []byte(s)) {
				t.Errorf("the %s's backup holds a token secret", name)
			}
		}
	}
	// Without that token, through the same client, nothing.
	code, body, err := c.api(c.web, http.MethodGet, "/v1/snapshot", "", "", nil)
	if err != nil || code != http.StatusForbidden || !strings.Contains(string(body), `operator:read on \"snapshot\"`) {
		t.Errorf("anonymous snapshot through h4: %d %s %v", code, body, err)
	}
}

// withT returns c for the subtest t, which may run in parallel with
// others: the helpers fail t, not the test that made c.
func (c *attackCluster) withT(t *testing.T) *attackCluster {
	cc := *c
	cc.t = t
	return &cc
}

// edgeAttacks: the hardening at the API's edges, each case on its own;
// the slow bodies take the agent's body timeout, so the cases run at once.
func edgeAttacks(t *testing.T, c *attackCluster, _ *localUser) {
	t.Run("DNS rebinding: Host evil.example is refused", func(t *testing.T) {
		t.Parallel()
		dnsRebinding(t, c.withT(t))
	})
	t.Run("slow bodies are answered and released", func(t *testing.T) {
		t.Parallel()
		slowBodies(t, c.withT(t))
	})
	t.Run("a policy write past the cap is refused and nothing is lost", func(t *testing.T) {
		t.Parallel()
		policyCaps(t, c.withT(t))
	})
	t.Run("token expiry shows in token/self and a deleted token is refused at once", func(t *testing.T) {
		t.Parallel()
		tokenLifetime(t, c.withT(t))
	})
	t.Run("validate warns about a world-readable file holding encrypt", func(t *testing.T) {
		t.Parallel()
		validateWarns(t, c.withT(t))
	})
}

func dnsRebinding(t *testing.T, c *attackCluster) {
	for _, a := range []*Agent{c.servers[0], c.web} {
		code, body, err := c.api(a, http.MethodGet, "/v1/agent/self", c.mgmt, "evil.example:8500", nil)
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusForbidden || !strings.Contains(string(body), "DNS rebinding") {
			t.Errorf("%s: Host evil.example with the management token: %d %s; want 403", a.Host.Name, code, body)
		} else {
			figure(t, "refused: GET /v1/agent/self on %s with Host: evil.example (and the management token): %d %s", a.Host.Name, code, errorOf(body))
		}
		if code, body, err := c.api(a, http.MethodGet, "/v1/agent/self", c.mgmt, "", nil); err != nil || code != http.StatusOK {
			t.Errorf("%s: the same call by address: %d %s %v", a.Host.Name, code, body, err)
		}
	}
}

// slowBodies opens slowClients connections to h4's API that send their
// headers and then one byte of their body every 2 s. Half send the
// management token to the service registration, whose handler reads the
// body: each is answered 400 once the agent's body timeout passes. Half
// send no token to the snapshot restore, which the ACL refuses before the
// body: each is answered 403 at once. Every connection is then closed by
// the agent, within the test's bound, and the agent still serves.
func slowBodies(t *testing.T, c *attackCluster) {
	results := make(chan trickleResult, slowClients)
	for i := range slowClients {
		go func() {
			if i%2 == 0 {
				results <- trickle(c.web.Host, "/v1/agent/service/register", c.mgmt)
			} else {
				results <- trickle(c.web.Host, "/v1/snapshot", "")
			}
		}()
	}
	var slowest time.Duration
	statuses := map[string]int{}
	answered := map[string]time.Duration{} // the slowest answer per path
	for range slowClients {
		r := <-results
		if r.err != nil {
			t.Errorf("a slow client: %v", r.err)
			continue
		}
		statuses[fmt.Sprintf("%s: %d %s", r.path, r.status, r.code)]++
		want := http.StatusBadRequest
		if r.path == "/v1/snapshot" {
			want = http.StatusForbidden
		}
		if r.status != want {
			t.Errorf("a slow client of %s was answered %d %s (%s), want %d", r.path, r.status, r.code, r.msg, want)
		}
		slowest = max(slowest, r.closed)
		answered[r.path] = max(answered[r.path], r.answered.Round(time.Second))
	}
	figure(t, "slow bodies: %d clients trickling 1 byte per 2 s to h4: answered %v, the last answer per path after %v; every connection closed by the agent, the last %s after its headers",
		slowClients, statuses, answered, slowest.Round(time.Second))
	if code, body, err := c.api(c.web, http.MethodGet, "/v1/agent/self", c.mgmt, "", nil); err != nil || code != http.StatusOK {
		t.Errorf("h4 after the slow clients: %d %s %v", code, body, err)
	}
}

// trickleResult is how a slow client's request ended: the answer, and
// when the agent closed the connection.
type trickleResult struct {
	path      string
	status    int
	code, msg string
	answered  time.Duration
	closed    time.Duration
	err       error
}

// trickle sends a PUT to path whose body is announced as 1,000 bytes and
// sent a byte every 2 s, reads the answer, and waits for the agent to
// close the connection; all within slowBound.
func trickle(h *Host, path, token string) (r trickleResult) {
	r.path = path
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := h.DialContext(ctx, "tcp", "127.0.0.1:8500")
	if err != nil {
		r.err = err
		return r
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(slowBound)) // the test's bound, not the behaviour
	hdr := "PUT " + path + " HTTP/1.1\r\nHost: 127.0.0.1:8500\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
	if token != "" {
		hdr += "X-Meshwork-Token: " + token + "\r\n"
	}
	if _, err := io.WriteString(conn, hdr+"\r\n{"); err != nil {
		r.err = err
		return r
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(2 * time.Second) // the trickle
		defer t.Stop()
		for i := 0; i < 1000; i++ {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		r.err = fmt.Errorf("%s: no answer within %s: %v", path, slowBound, err)
		return r
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.answered = time.Since(start)
	r.status, r.code, r.msg = resp.StatusCode, codeOf(b), errorOf(b)
	// The agent closes the connection: a read ends with EOF (or a reset),
	// not with the test's deadline.
	if _, err := io.Copy(io.Discard, conn); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		r.err = fmt.Errorf("%s: answered %d, but the connection was still open after %s", path, r.status, slowBound)
		return r
	}
	r.closed = time.Since(start)
	return r
}

// codeOf is the "code" of a JSON error answer, "" when it has none.
func codeOf(b []byte) string {
	var e struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Code
}

// errorOf is the "error" of a JSON error answer, or the answer's first
// 100 bytes.
func errorOf(b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	if len(b) > 100 {
		b = b[:100]
	}
	return string(bytes.TrimSpace(b))
}

// policyCaps fills most of the policy's 1 MiB with one large Intention,
// then tries a second: it is refused with 413 policy_cap, and the policy
// holds what it held before. The large document is deleted at the end.
func policyCaps(t *testing.T, c *attackCluster) {
	h1 := c.servers[0]
	big := func(name string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "kind: Intention\nname: %s\nsources:\n", name)
		desc := strings.Repeat("x", 512)
		for i := range 1000 {
			fmt.Fprintf(&b, "  - name: caller-%04d\n    action: deny\n    description: %s\n", i, desc)
		}
		return b.String()
	}
	c.mustApply(h1, big("cap-a"))
	defer c.op(h1, "policy", "delete", "Intention", "cap-a")
	before, err := c.policyDocs(h1)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.op(h1, "policy", "apply", "-f", c.writeFile("cap-b.yaml", big("cap-b")))
	checkRefused(t, "policy apply of a second 0.55 MB Intention (the operator's token)", out, exitCode(err), "policy cap exceeded: total size")
	after, err := c.policyDocs(h1)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("after the refused write the policy is %+v, before it %+v", after, before)
	}
	// Through the API, the status and code.
	body, _ := json.Marshal([]map[string]any{{"kind": "Intention", "name": "cap-c", "sources": bigSources()}})
	code, resp, err := c.api(c.web, http.MethodPut, "/v1/policy", c.mgmt, "", bytes.NewReader(body))
	if err != nil || code != http.StatusRequestEntityTooLarge || codeOf(resp) != "policy_cap" {
		t.Errorf("PUT /v1/policy past the cap through h4: %d %s %v; want 413 policy_cap", code, resp, err)
	} else {
		figure(t, "refused: PUT /v1/policy past the cap through h4: %d %s", code, codeOf(resp))
	}
	if _, err := c.op(h1, "policy", "get", "Intention", "cap-a"); err != nil {
		t.Errorf("cap-a after the refused writes: %v", err)
	}
}

// policySummary is what a refused write must leave as it was: the
// policy's index, and its documents by kind/name with their modify index.
type policySummary struct {
	index uint64
	docs  string
}

// policyDocs summarises the policy as the leader holds it, read through a
// (a consistent read: a's own copy may not hold a write that just returned).
func (c *attackCluster) policyDocs(a *Agent) (policySummary, error) {
	var l struct {
		Index     uint64 `json:"index"`
		Documents []struct {
			Kind        string `json:"kind"`
			Name        string `json:"name"`
			ModifyIndex uint64 `json:"modify_index"`
		} `json:"documents"`
	}
	out, err := c.op(a, "policy", "list", "--consistent", "--format", "json")
	if err != nil {
		return policySummary{}, fmt.Errorf("policy list: %v", err)
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return policySummary{}, fmt.Errorf("policy list: %v", err)
	}
	var docs []string
	for _, d := range l.Documents {
		docs = append(docs, fmt.Sprintf("%s/%s@%d", d.Kind, d.Name, d.ModifyIndex))
	}
	return policySummary{index: l.Index, docs: strings.Join(docs, " ")}, nil
}

func bigSources() []map[string]string {
	var s []map[string]string
	for i := range 1000 {
		s = append(s, map[string]string{"name": fmt.Sprintf("caller-%04d", i), "action": "deny", "description": strings.Repeat("y", 512)})
	}
	return s
}

// tokenLifetime: a token made with --ttl 1m shows its expiry in
// token/self; a deleted token is refused at once, on the agent that
// deleted it, and then everywhere.
func tokenLifetime(t *testing.T, c *attackCluster) {
	h1 := c.servers[0]
	made := time.Now()
	var tok api.ACLToken
	if err := c.opJSON(h1, &tok, "acl", "token", "create", "--ttl", "1m", "--policy", "agent-h1", "--description", "short-lived"); err != nil {
		t.Fatal(err)
	}
	f := c.writeSecret("short.token", tok.SecretID)
	var self api.ACLToken
	if err := h1.JSON(&self, "acl", "token", "self", "--token-file", f); err != nil {
		t.Fatal(err)
	}
	if self.ExpirationTime == nil || self.ExpirationTime.Before(made) || self.ExpirationTime.After(made.Add(2*time.Minute)) {
		t.Errorf("token/self of a token made with --ttl 1m at %s shows expiry %v", made.Format(time.RFC3339), self.ExpirationTime)
	} else {
		figure(t, "token/self of a --ttl 1m token: accessor %s expires %s (made %s)", self.AccessorID, self.ExpirationTime.Format(time.RFC3339), made.Format(time.RFC3339))
	}
	c.mustOp(h1, "acl", "token", "delete", tok.AccessorID)
	out, err := h1.CLI("acl", "token", "self", "--token-file", f)
	checkRefused(t, "the deleted token, at once, on h1", out, exitCode(err), "ACL token not found")
	Eventually(t, 30*time.Second, "h4 refuses the deleted token", func() error {
		out, err := c.web.CLI("acl", "token", "self", "--token-file", f)
		if err == nil || !strings.Contains(out, "ACL token not found") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// validateWarns: `meshwork validate` warns about a config file holding
// encrypt that every user may read, and not once it is 0600.
func validateWarns(t *testing.T, c *attackCluster) {
	f := filepath.Join(t.TempDir(), "leaky.yaml")
	cfg := fmt.Sprintf("node: leaky\ndata_dir: %s\ncluster_key: %q\nencrypt: %q\n", t.TempDir(), c.ck, c.enc)
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	out, err := c.web.CLI("validate", f)
	if err != nil || !strings.Contains(out, "warning: "+f+" holds encrypt") || !strings.Contains(out, "every user") {
		t.Errorf("validate of a 0644 file with encrypt: %v: %s", err, out)
	} else {
		figure(t, "warned: meshwork validate %s (0644): %s", filepath.Base(f), firstLine(out))
	}
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := c.web.CLI("validate", f); err != nil || strings.Contains(out, "warning") {
		t.Errorf("validate of the same file at 0600: %v: %s", err, out)
	}
}
