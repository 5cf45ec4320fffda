package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/meshwork/meshwork/bench/internal/agentproc"
	"github.com/meshwork/meshwork/bench/internal/cpuhost"
	"github.com/meshwork/meshwork/transport/l4"
)

// The services the server agent registers, all on the apps of host B.
const (
	svcL4   = "web-l4" // ServiceDefaults protocol tcp: per connection
	svcL7   = "web-l7" // protocol http: per request
	svcGRPC = "ping"   // protocol grpc: per request, h2c
)

// policyDocs opens the mesh and gives each service its protocol.
const policyDocs = `kind: IntentionDefaults
name: default
action: allow
---
kind: ServiceDefaults
name: ` + svcL4 + `
protocol: tcp
---
kind: ServiceDefaults
name: ` + svcL7 + `
protocol: http
---
kind: ServiceDefaults
name: ` + svcGRPC + `
protocol: grpc
`

// mesh is the two agents.
type mesh struct {
	bin                string
	serverIP, clientIP string
	// vipNet is the second octet of the agents' VIP ranges: 127.<vipNet>.0.0/16
	// for the server, the next for the client, whose VIPs the load
	// generators reach.
	vipNet int
	// extra is configuration added to both agents'.
	extra string
	// policy is documents added to policyDocs.
	policy string
	api    map[string]string // agent -> API address
	dns    string            // the client agent's DNS
	agents map[string]*agentproc.Proc
	// started is when the last agent started.
	started time.Time
}

func newMesh(bin, serverIP, clientIP string, vipNet int, extra string) *mesh {
	return &mesh{bin: bin, serverIP: serverIP, clientIP: clientIP, vipNet: vipNet, extra: extra,
		api: map[string]string{"server": serverIP + ":8500", "client": clientIP + ":8500"},
		dns: clientIP + ":8600", agents: map[string]*agentproc.Proc{}}
}

func (m *mesh) vipRange(client bool) string {
	n := m.vipNet
	if client {
		n++
	}
	return fmt.Sprintf("127.%d.0.0/16", n)
}

// start starts a server agent on b that registers the three services (two
// on the HTTP app's port, one on the gRPC app's) and a client agent on a
// bootstrapped with a CA token from it, applies the policy through the CLI
// and waits until both agents hold a certificate. The agents it started
// are the caller's to stop, on error too.
func (m *mesh) start(ctx context.Context, a, b cpuhost.Host, work string, httpPort, grpcPort int) error {
	for _, ip := range []string{m.serverIP, m.clientIP} {
		for _, port := range []int{8500, 8600, 7946, 7947} {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("%s:%d is taken (choose -server-ip/-client-ip): %w", ip, port, err)
			}
			l.Close()
		}
	}
	out, err := exec.CommandContext(ctx, m.bin, "keygen").Output()
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	clusterKey := strings.TrimSpace(string(out))
	dir := filepath.Join(work, "agents-"+m.serverIP)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	common := func(name, ip, vipRange string) string {
		return fmt.Sprintf("node: %s\ndata_dir: %s\nbind: %s\nadvertise: %s\naddresses: {http: %s, dns: %s}\ncluster_key: %q\nretry_join: [%s]\nlog_level: info\ntunnel:\n  vip_range: %s\n%s",
			name, filepath.Join(dir, name+"-data"), ip, ip, ip, ip, clusterKey, m.serverIP, vipRange, m.extra)
	}
	server, err := m.startAgent(ctx, b, dir, "server", common("server", m.serverIP, m.vipRange(false))+fmt.Sprintf(`server: true
bootstrap_expect: 1
services:
  - {name: %s, address: 127.0.0.1, port: %d}
  - {name: %s, address: 127.0.0.1, port: %d}
  - {name: %s, address: 127.0.0.1, port: %d}
`, svcL4, httpPort, svcL7, httpPort, svcGRPC, grpcPort))
	if err != nil {
		return err
	}
	if err := poll(ctx, 90*time.Second, "the server agent's CA", func() error {
		if err := agentExited(server); err != nil {
			return err
		}
		return m.cli(ctx, "server", nil, "ca", "roots")
	}); err != nil {
		return err
	}
	var tok bytes.Buffer
	if err := m.cli(ctx, "server", &tok, "ca", "token", "client"); err != nil {
		return err
	}
	tokFile := filepath.Join(dir, "client-token")
	if err := os.WriteFile(tokFile, []byte(agentproc.LastLine(tok.String())), 0o600); err != nil {
		return err
	}
	m.started = time.Now()
	client, err := m.startAgent(ctx, a, dir, "client", common("client", m.clientIP, m.vipRange(true))+fmt.Sprintf("ca:\n  token_file: %s\n", tokFile))
	if err != nil {
		return err
	}
	policy := filepath.Join(dir, "policy.yaml")
	docs := policyDocs
	if m.policy != "" {
		docs += "---\n" + m.policy
	}
	if err := os.WriteFile(policy, []byte(docs), 0o600); err != nil {
		return err
	}
	if err := m.cli(ctx, "server", nil, "policy", "apply", "-f", policy); err != nil {
		return err
	}
	for name, p := range map[string]*agentproc.Proc{"server": server, "client": client} {
		if err := poll(ctx, 90*time.Second, "the "+name+" agent's certificate", func() error {
			if err := agentExited(p); err != nil {
				return err
			}
			return m.cli(ctx, name, nil, "ca", "cert")
		}); err != nil {
			return err
		}
	}
	return nil
}

// startAgent starts an agent with -agent-gomaxprocs and pins it to h.
// agentproc passes this program's environment on, so GOMAXPROCS is set
// around the start alone.
func (m *mesh) startAgent(ctx context.Context, h cpuhost.Host, dir, name, config string) (*agentproc.Proc, error) {
	if *agentProcs > 0 {
		old, had := os.LookupEnv("GOMAXPROCS")
		os.Setenv("GOMAXPROCS", strconv.Itoa(*agentProcs))
		defer func() {
			if had {
				os.Setenv("GOMAXPROCS", old)
			} else {
				os.Unsetenv("GOMAXPROCS")
			}
		}()
	}
	p, err := agentproc.Start(m.bin, dir, name, config)
	if err != nil {
		return nil, fmt.Errorf("start the %s agent: %w", name, err)
	}
	m.agents[name] = p
	if err := h.PinRunning(ctx, p.Cmd.Process.Pid); err != nil {
		return nil, err
	}
	return p, nil
}

// stop ends both agents, the client first.
func (m *mesh) stop() {
	for _, name := range []string{"client", "server"} {
		if p := m.agents[name]; p != nil {
			p.Stop()
		}
	}
}

func agentExited(p *agentproc.Proc) error {
	select {
	case <-p.Done():
		return p.Exited()
	default:
		return nil
	}
}

// cli runs a meshwork command against an agent's API.
func (m *mesh) cli(ctx context.Context, agent string, stdout *bytes.Buffer, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.bin, append(args, "--http-addr", m.api[agent])...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("meshwork %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return nil
}

// vip asks the client agent's DNS for svc.service.mesh, as an application
// would, until the answer is one of the client agent's VIPs.
func (m *mesh) vip(ctx context.Context, svc string) (string, error) {
	var ip string
	err := poll(ctx, 90*time.Second, svc+".service.mesh answering a VIP", func() error {
		q := new(dns.Msg)
		q.SetQuestion(svc+".service.mesh.", dns.TypeA)
		r, err := dns.Exchange(q, m.dns)
		if err != nil {
			return err
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok && strings.HasPrefix(a.A.String(), fmt.Sprintf("127.%d.", m.vipNet+1)) {
				ip = a.A.String()
				return nil
			}
		}
		return fmt.Errorf("answer %v", r.Answer)
	})
	return ip, err
}

// pids returns the agents' PIDs by the names the report uses.
func (m *mesh) pids() map[string]int {
	return map[string]int{
		"client agent": m.agents["client"].Cmd.Process.Pid,
		"server agent": m.agents["server"].Cmd.Process.Pid,
	}
}

// alive reports an agent that has exited.
func (m *mesh) alive() error {
	var errs []error
	for _, p := range m.agents {
		errs = append(errs, agentExited(p))
	}
	return errors.Join(errs...)
}

// inboundStreams reads meshwork_transport_inbound_streams_total, the
// streams the L4 splice took, from an agent's metrics.
func inboundStreams(ctx context.Context, api string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/v1/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return metricSum(string(body), l4.MetricInbound)
}

// metricSum adds up every sample of a metric in Prometheus' text format.
func metricSum(body, name string) (float64, error) {
	var sum float64
	found := false
	for _, line := range strings.Split(body, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(line, "#") {
			continue
		}
		if f[0] != name && !strings.HasPrefix(f[0], name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", name, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("metric %s: not found", name)
	}
	return sum, nil
}
