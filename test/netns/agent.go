//go:build e2e

package netns

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/meshtest"
)

// Binary builds cmd/meshwork once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return meshtest.Build(t, "./cmd/meshwork")
}

// Key returns a fresh base64 key of 32 bytes, for encrypt and cluster_key.
func Key() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// AgentOptions describe one agent of a test cluster.
type AgentOptions struct {
	// Join is the address to retry_join; empty for none.
	Join []string
	// Encrypt and ClusterKey are shared by the cluster.
	Encrypt    string
	ClusterKey string
	// Server and BootstrapExpect make a Raft server.
	Server          bool
	BootstrapExpect int
	// Token is a CA bootstrap token (Agent.Token on a server); it is
	// written to a file that ca.token_file names. Empty for none: servers
	// sign their own leaves.
	Token string
	// Extra is YAML appended to the generated config file.
	Extra string
}

// Agent is a meshwork agent process in a host.
type Agent struct {
	Host    *Host
	Proc    *Proc
	Config  string // path of its config file
	DataDir string
	bin     string
}

// StartAgent writes a config for h and starts `meshwork agent` in it. The
// API and DNS listen on 127.0.0.1 inside the host's namespace.
func (h *Host) StartAgent(opts AgentOptions) *Agent {
	t := h.net.t
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	a := &Agent{Host: h, Config: filepath.Join(dir, "meshwork.yaml"), DataDir: filepath.Join(dir, "data"), bin: bin}
	var b strings.Builder
	fmt.Fprintf(&b, "node: %s\ndata_dir: %s\nbind: %s\nadvertise: %s\nlog_level: debug\n", h.Name, a.DataDir, h.Addr, h.Addr)
	fmt.Fprintf(&b, "cluster_key: %q\n", opts.ClusterKey)
	if opts.Encrypt != "" {
		fmt.Fprintf(&b, "encrypt: %q\n", opts.Encrypt)
	}
	if len(opts.Join) > 0 {
		fmt.Fprintf(&b, "retry_join: [%s]\n", strings.Join(opts.Join, ", "))
	}
	if opts.Server {
		fmt.Fprintf(&b, "server: true\nbootstrap_expect: %d\n", opts.BootstrapExpect)
	}
	if opts.Token != "" {
		tok := filepath.Join(dir, "ca-token")
		if err := os.WriteFile(tok, []byte(opts.Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "ca:\n  token_file: %s\n", tok)
	}
	b.WriteString(opts.Extra)
	if err := os.WriteFile(a.Config, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Proc = h.Start(bin, "agent", "--config", a.Config)
	return a
}

// Restart starts the agent again with the same config and data dir, after
// its process has exited.
func (a *Agent) Restart() {
	a.Host.net.t.Helper()
	a.Proc = a.Host.Start(a.bin, "agent", "--config", a.Config)
}

// CLI runs a meshwork CLI command in the agent's host, against its API.
func (a *Agent) CLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return a.Host.Run(ctx, a.bin, args...)
}

// JSON runs a CLI command with --format json and decodes its output.
func (a *Agent) JSON(out any, args ...string) error {
	s, err := a.CLI(append(args, "--format", "json")...)
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, s)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		return fmt.Errorf("%s: decode %q: %v", strings.Join(args, " "), s, err)
	}
	return nil
}

// Members returns the members as this agent sees them, by name.
func (a *Agent) Members() (map[string]api.Member, error) {
	var ms []api.Member
	if err := a.JSON(&ms, "members"); err != nil {
		return nil, err
	}
	out := make(map[string]api.Member, len(ms))
	for _, m := range ms {
		out[m.Name] = m
	}
	return out, nil
}

// StatusOf returns the status this agent gives node, or an error.
func (a *Agent) StatusOf(node string) (string, error) {
	ms, err := a.Members()
	if err != nil {
		return "", err
	}
	m, ok := ms[node]
	if !ok {
		return "", fmt.Errorf("%s does not list %s", a.Host.Name, node)
	}
	return m.Status, nil
}

// Token makes a one-time CA bootstrap token for node on this agent, which
// must be a server whose CA is ready.
func (a *Agent) Token(node string) (string, error) {
	out, err := a.CLI("ca", "token", node)
	if err != nil {
		return "", fmt.Errorf("ca token %s: %v: %s", node, err, out)
	}
	return strings.TrimSpace(out), nil
}
