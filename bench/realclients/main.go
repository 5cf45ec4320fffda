// Command realclients runs real Debian clients through the mesh and
// directly, one run each, in one go: redis-benchmark against redis-server
// and pgbench against PostgreSQL.
//
// It starts everything itself on loopback, in a temporary directory: a
// redis-server and a PostgreSQL (initdb as the postgres user when run as
// root), and two meshwork agents built from this tree, a server agent that
// registers both services and a client agent that bootstraps with a token
// from it. The mesh path is the client agent's virtual IP of each service
// (resolved through the client agent's DNS), a QUIC tunnel with mutual TLS
// to the server agent, and the server agent's dial of the local service.
// The direct path is the service's own address. Every load is bounded in
// time; every process it started is stopped by its PID.
//
//	scripts/deps.sh bench      # redis-server, redis-tools, postgresql
//	go run ./bench/realclients
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/meshwork/meshwork/internal/freeport"
)

var (
	binFlag     = flag.String("bin", "", "meshwork binary (default: built from this tree)")
	serverIP    = flag.String("server-ip", "127.0.0.71", "loopback address of the server agent")
	clientIP    = flag.String("client-ip", "127.0.0.72", "loopback address of the client agent")
	redisN      = flag.Int("redis-requests", 100000, "redis-benchmark requests per test")
	redisC      = flag.Int("redis-clients", 50, "redis-benchmark connections")
	redisTests  = flag.String("redis-tests", "ping_inline,set,get,incr,lpush,lpop", "redis-benchmark tests")
	redisSerial = flag.Int("redis-serial-requests", 20000, "requests per test of the one-connection redis-benchmark run (latency of one round trip)")
	pgScale     = flag.Int("pg-scale", 10, "pgbench scale factor")
	pgClients   = flag.Int("pg-clients", 8, "pgbench clients")
	pgDuration  = flag.Duration("pg-duration", 20*time.Second, "pgbench run length per path and mode")
	loadTimeout = flag.Duration("load-timeout", 3*time.Minute, "upper bound of any one client run")
	agentProcs  = flag.Int("agent-gomaxprocs", 1, "GOMAXPROCS of each agent (0: Go's default); the two agents, which normally run on two hosts, share this machine's cores with the servers and the clients")
)

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "realclients:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	for _, tool := range []string{"redis-server", "redis-benchmark", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: scripts/deps.sh bench", tool)
		}
	}
	pgBin, err := postgresBin()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "meshwork-realclients-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	procs := &procSet{}
	defer procs.stopAll()

	bin := *binFlag
	if bin == "" {
		bin = filepath.Join(work, "meshwork")
		fmt.Println("building meshwork")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/meshwork").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v: %s", err, out)
		}
	}

	// The services listen on 127.0.0.1 only: the agents' addresses stay free
	// for their own listeners, and the VIP ports for the VIP listeners.
	redisPort, err := freeport.TCP("127.0.0.1")
	if err != nil {
		return err
	}
	if _, err := procs.start(ctx, work, "redis", "", "redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(redisPort),
		"--save", "", "--appendonly", "no", "--dir", work); err != nil {
		return err
	}
	pgPort, err := freeport.TCP("127.0.0.1")
	if err != nil {
		return err
	}
	if err := startPostgres(ctx, procs, work, pgBin, pgPort); err != nil {
		return err
	}
	if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", redisPort)); err != nil {
		return fmt.Errorf("redis: %w", err)
	}

	mesh, err := startMesh(ctx, procs, work, bin, redisPort, pgPort)
	if err != nil {
		return err
	}
	redisVIP, err := mesh.vip(ctx, "redis")
	if err != nil {
		return err
	}
	pgVIP, err := mesh.vip(ctx, "postgres")
	if err != nil {
		return err
	}
	fmt.Printf("redis:    direct 127.0.0.1:%d, mesh %s:%d (client agent %s -> QUIC/mTLS -> server agent %s)\n", redisPort, redisVIP, redisPort, *clientIP, *serverIP)
	fmt.Printf("postgres: direct 127.0.0.1:%d, mesh %s:%d\n", pgPort, pgVIP, pgPort)

	// redis-benchmark, one run each: many connections (throughput), then one
	// connection (the cost of one round trip).
	var redisRes, serialRes [2][]redisRow
	for i, host := range []string{"127.0.0.1", redisVIP} {
		rows, err := redisBenchmark(ctx, host, redisPort, *redisN, *redisC, *redisTests)
		if err != nil {
			return fmt.Errorf("redis-benchmark -h %s: %w", host, err)
		}
		redisRes[i] = rows
	}
	for i, host := range []string{"127.0.0.1", redisVIP} {
		rows, err := redisBenchmark(ctx, host, redisPort, *redisSerial, 1, "ping_inline,get")
		if err != nil {
			return fmt.Errorf("redis-benchmark -c 1 -h %s: %w", host, err)
		}
		serialRes[i] = rows
	}

	// pgbench: initialise once (directly), then the TPC-B-like default and
	// the same with a new connection per transaction (-C), one run each.
	if err := pgbenchInit(ctx, pgBin, pgPort); err != nil {
		return err
	}
	type pgRun struct {
		mode string
		args []string
	}
	runs := []pgRun{
		{"TPC-B (default script)", nil},
		{"select-only (-S)", []string{"-S"}},
		{"select-only, new connection per transaction (-S -C)", []string{"-S", "-C"}},
	}
	pgRes := make([][2]pgResult, len(runs))
	for i, r := range runs {
		for j, host := range []string{"127.0.0.1", pgVIP} {
			res, err := pgbench(ctx, pgBin, host, pgPort, r.args)
			if err != nil {
				return fmt.Errorf("pgbench -h %s %v: %w", host, r.args, err)
			}
			pgRes[i][j] = res
		}
	}

	fmt.Println()
	printRedis(fmt.Sprintf("redis-benchmark -h HOST -p %d -n %d -c %d -t %s --csv", redisPort, *redisN, *redisC, *redisTests), redisRes)
	printRedis(fmt.Sprintf("redis-benchmark -h HOST -p %d -n %d -c 1 -t ping_inline,get --csv", redisPort, *redisSerial), serialRes)
	fmt.Printf("pgbench -h HOST -p %d -U postgres -c %d -j 2 -T %d [-S] [-C] postgres (scale %d)\n\n", pgPort, *pgClients, int(pgDuration.Seconds()), *pgScale)
	fmt.Println("| mode | direct tps | mesh tps | mesh/direct | direct latency ms | mesh latency ms | direct connect ms | mesh connect ms |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for i, r := range runs {
		d, m := pgRes[i][0], pgRes[i][1]
		fmt.Printf("| %s | %.0f | %.0f | %.2f | %.3f | %.3f | %.3f | %.3f |\n", r.mode, d.tps, m.tps, m.tps/d.tps, d.latency, m.latency, d.connect, m.connect)
	}
	fmt.Println()
	fmt.Printf("agents (GOMAXPROCS=%d):\n\n| agent | inbound tunnel streams | max RSS | CPU s, whole run |\n|---|---:|---:|---:|\n", *agentProcs)
	for _, name := range []string{"client", "server"} {
		n, _ := mesh.inboundStreams(ctx, name)
		rss, cpu := procUsage(mesh.procs[name].cmd.Process.Pid)
		fmt.Printf("| %s | %.0f | %.1f MiB | %.1f |\n", name, n, float64(rss)/1024, cpu)
	}
	return nil
}

// printRedis prints direct and mesh results side by side.
func printRedis(cmd string, res [2][]redisRow) {
	fmt.Printf("%s\n\n", cmd)
	fmt.Println("| test | direct req/s | mesh req/s | mesh/direct | direct p50 ms | mesh p50 ms | direct p99 ms | mesh p99 ms |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for k, d := range res[0] {
		if k >= len(res[1]) {
			break
		}
		m := res[1][k]
		fmt.Printf("| %s | %.0f | %.0f | %.2f | %.3f | %.3f | %.3f | %.3f |\n", d.test, d.rps, m.rps, m.rps/d.rps, d.p50, m.p50, d.p99, m.p99)
	}
	fmt.Println()
}

// procUsage reads a process's peak RSS (KiB) and CPU time (s) from /proc.
func procUsage(pid int) (rssKiB int, cpu float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
				rssKiB, _ = strconv.Atoi(f[1])
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name, which is in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpu = (ut + st) / 100 // USER_HZ is 100 on Linux
			}
		}
	}
	return rssKiB, cpu
}

// procSet holds the processes this program started, to stop them by PID.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// start starts name with args, its output in dir/<label>.log; runAs runs it
// as that user (runuser), for postgres.
func (ps *procSet) start(ctx context.Context, dir, label, runAs, name string, args ...string) (*proc, error) {
	return ps.startEnv(ctx, nil, dir, label, runAs, name, args...)
}

// startEnv is start with extra environment variables.
func (ps *procSet) startEnv(_ context.Context, env []string, dir, label, runAs, name string, args ...string) (*proc, error) {
	if runAs != "" {
		args = append([]string{"-u", runAs, "--", name}, args...)
		name = "runuser"
	}
	f, err := os.Create(filepath.Join(dir, label+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	p := &proc{name: label, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.procs = append(ps.procs, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll sends SIGTERM to every process started, in reverse order, and
// SIGKILL to those still running 10 s later.
func (ps *procSet) stopAll() {
	ps.mu.Lock()
	procs := ps.procs
	ps.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// poll retries f every 100 ms until it succeeds or 90 s pass.
func poll(ctx context.Context, what string, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond): // polling interval
		}
	}
}

func waitTCP(ctx context.Context, addr string) error {
	return poll(ctx, "connect to "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// postgresBin finds the newest installed PostgreSQL's bin directory.
func postgresBin() (string, error) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return "", errors.New("PostgreSQL is missing: scripts/deps.sh bench")
	}
	return filepath.Dir(m[len(m)-1]), nil
}

// startPostgres makes a cluster in work/pg and starts it on 127.0.0.1:port,
// its socket in the data directory. PostgreSQL refuses to run as root, so
// as root it runs as the postgres user.
func startPostgres(ctx context.Context, procs *procSet, work, bin string, port int) error {
	dir := filepath.Join(work, "pg")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	runAs := ""
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{work, dir} {
			if err := os.Chown(p, uid, gid); err != nil {
				return err
			}
		}
		runAs = "postgres"
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	if runAs != "" {
		initdb = exec.CommandContext(ctx, "runuser", "-u", runAs, "--", filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out)
	}
	if _, err := procs.start(ctx, work, "postgres", runAs, filepath.Join(bin, "postgres"), "-D", dir, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off"); err != nil {
		return err
	}
	return poll(ctx, "postgres accepts connections", func() error {
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_isready"), "-h", "127.0.0.1", "-p", strconv.Itoa(port)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// mesh is the two agents.
type mesh struct {
	bin      string
	http     map[string]string // agent -> API address
	dnsAddr  string            // the client agent's DNS
	vipRange string
	procs    map[string]*proc // the agents
}

// startMesh starts a server agent that registers redis and postgres, and a
// client agent bootstrapped with a token from it, then opens the mesh
// (IntentionDefaults allow) and waits until both tunnels serve.
func startMesh(ctx context.Context, procs *procSet, work, bin string, redisPort, pgPort int) (*mesh, error) {
	for _, ip := range []string{*serverIP, *clientIP} {
		for _, port := range []int{8500, 8600, 7946, 7947} {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				return nil, fmt.Errorf("%s:%d is taken (choose -server-ip/-client-ip): %w", ip, port, err)
			}
			l.Close()
		}
	}
	out, err := exec.CommandContext(ctx, bin, "keygen").Output()
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	clusterKey := strings.TrimSpace(string(out))
	m := &mesh{bin: bin, http: map[string]string{"server": *serverIP + ":8500", "client": *clientIP + ":8500"},
		dnsAddr: *clientIP + ":8600", vipRange: "127.247.0.0/16", procs: map[string]*proc{}}
	write := func(name, body string) (string, error) {
		dir := filepath.Join(work, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		f := filepath.Join(dir, "meshwork.yaml")
		return f, os.WriteFile(f, []byte(body), 0o600)
	}
	common := func(name, ip, vipRange string) string {
		return fmt.Sprintf("node: %s\ndata_dir: %s\nbind: %s\nadvertise: %s\naddresses: {http: %s, dns: %s}\ncluster_key: %q\nretry_join: [%s]\nlog_level: info\ntunnel:\n  vip_range: %s\n",
			name, filepath.Join(work, name, "data"), ip, ip, ip, ip, clusterKey, *serverIP, vipRange)
	}
	scfg, err := write("server", common("server", *serverIP, "127.246.0.0/16")+fmt.Sprintf(`server: true
bootstrap_expect: 1
services:
  - name: redis
    address: 127.0.0.1
    port: %d
  - name: postgres
    address: 127.0.0.1
    port: %d
`, redisPort, pgPort))
	if err != nil {
		return nil, err
	}
	var env []string
	if *agentProcs > 0 {
		env = []string{"GOMAXPROCS=" + strconv.Itoa(*agentProcs)}
	}
	p, err := procs.startEnv(ctx, env, filepath.Join(work, "server"), "agent", "", bin, "agent", "--config", scfg)
	if err != nil {
		return nil, err
	}
	m.procs["server"] = p
	if err := poll(ctx, "the server agent's CA", func() error { return m.cli(ctx, "server", nil, "ca", "roots") }); err != nil {
		return nil, err
	}
	var tok bytes.Buffer
	if err := m.cli(ctx, "server", &tok, "ca", "token", "client"); err != nil {
		return nil, err
	}
	tokFile := filepath.Join(work, "client-token")
	if err := os.WriteFile(tokFile, tok.Bytes(), 0o600); err != nil {
		return nil, err
	}
	ccfg, err := write("client", common("client", *clientIP, m.vipRange)+fmt.Sprintf("ca:\n  token_file: %s\n", tokFile))
	if err != nil {
		return nil, err
	}
	if p, err = procs.startEnv(ctx, env, filepath.Join(work, "client"), "agent", "", bin, "agent", "--config", ccfg); err != nil {
		return nil, err
	}
	m.procs["client"] = p
	policy := filepath.Join(work, "allow.yaml")
	if err := os.WriteFile(policy, []byte("kind: IntentionDefaults\nname: default\naction: allow\n"), 0o600); err != nil {
		return nil, err
	}
	if err := m.cli(ctx, "server", nil, "policy", "apply", "-f", policy); err != nil {
		return nil, err
	}
	for _, name := range []string{"server", "client"} {
		if err := poll(ctx, name+" agent's tunnel", func() error { return m.tunnelServes(ctx, name) }); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// cli runs a meshwork command against an agent's API.
func (m *mesh) cli(ctx context.Context, agent string, stdout io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, m.bin, append(args, "--http-addr", m.http[agent])...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("meshwork %s: %v: %s", strings.Join(args, " "), err, errb.Bytes())
	}
	return nil
}

var tunnelPortRE = regexp.MustCompile(`"tunnel_port":\s*([0-9]+)`)

// tunnelServes reports whether the agent publishes a tunnel port.
func (m *mesh) tunnelServes(ctx context.Context, agent string) error {
	body, err := m.get(ctx, agent, "/v1/agent/self")
	if err != nil {
		return err
	}
	if mm := tunnelPortRE.FindStringSubmatch(body); mm == nil || mm[1] == "0" {
		return errors.New("no tunnel port yet")
	}
	return nil
}

func (m *mesh) get(ctx context.Context, agent, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.http[agent]+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// vip asks the client agent's DNS for svc.service.mesh, as an application
// would, and waits until the answer is a VIP whose listener accepts.
func (m *mesh) vip(ctx context.Context, svc string) (string, error) {
	var ip string
	err := poll(ctx, svc+".service.mesh answers a VIP", func() error {
		q := new(dns.Msg)
		q.SetQuestion(svc+".service.mesh.", dns.TypeA)
		r, err := dns.Exchange(q, m.dnsAddr)
		if err != nil {
			return err
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok && strings.HasPrefix(a.A.String(), "127.247.") {
				ip = a.A.String()
				return nil
			}
		}
		return fmt.Errorf("answer %v", r.Answer)
	})
	return ip, err
}

// inboundStreams reads meshwork_transport_inbound_streams_total of an agent.
func (m *mesh) inboundStreams(ctx context.Context, agent string) (float64, error) {
	body, err := m.get(ctx, agent, "/v1/metrics")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "meshwork_transport_inbound_streams_total" {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, errors.New("metric not found")
}

type redisRow struct {
	test          string
	rps, p50, p99 float64
}

// redisBenchmark runs redis-benchmark once against host:port and parses its
// CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
// "p95_latency_ms","p99_latency_ms","max_latency_ms".
func redisBenchmark(ctx context.Context, host string, port, requests, conns int, tests string) ([]redisRow, error) {
	ctx, cancel := context.WithTimeout(ctx, *loadTimeout)
	defer cancel()
	args := []string{"-h", host, "-p", strconv.Itoa(port), "-n", strconv.Itoa(requests), "-c", strconv.Itoa(conns), "-t", tests, "--csv"}
	fmt.Printf("$ redis-benchmark %s\n", strings.Join(args, " "))
	out, err := exec.CommandContext(ctx, "redis-benchmark", args...).Output()
	if err != nil {
		return nil, err
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("csv: %w: %s", err, out)
	}
	var rows []redisRow
	for _, r := range recs {
		if len(r) < 7 || r[0] == "test" {
			continue
		}
		row := redisRow{test: r[0]}
		for i, p := range []*float64{&row.rps, &row.p50, &row.p99} {
			col := []int{1, 4, 6}[i]
			if *p, err = strconv.ParseFloat(r[col], 64); err != nil {
				return nil, fmt.Errorf("csv %v: %w", r, err)
			}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("no results in %q", out)
	}
	return rows, nil
}

func pgbenchInit(ctx context.Context, bin string, port int) error {
	ctx, cancel := context.WithTimeout(ctx, *loadTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "pgbench"), "-i", "-q", "-s", strconv.Itoa(*pgScale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "postgres").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	return nil
}

// pgResult is one pgbench run: transactions per second (with -C including
// the reconnections), the average latency of a transaction, and the
// average connection time.
type pgResult struct{ tps, latency, connect float64 }

var (
	pgTPS  = regexp.MustCompile(`tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)`)
	pgLat  = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
	pgConn = regexp.MustCompile(`(?:initial|average) connection time = ([0-9.]+) ms`)
)

// pgbench runs pgbench once against host:port for -pg-duration.
func pgbench(ctx context.Context, bin, host string, port int, extra []string) (pgResult, error) {
	ctx, cancel := context.WithTimeout(ctx, *loadTimeout)
	defer cancel()
	args := append([]string{"-h", host, "-p", strconv.Itoa(port), "-U", "postgres", "-c", strconv.Itoa(*pgClients), "-j", "2",
		"-T", strconv.Itoa(int(pgDuration.Seconds()))}, extra...)
	args = append(args, "postgres")
	fmt.Printf("$ pgbench %s\n", strings.Join(args, " "))
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "pgbench"), args...).CombinedOutput()
	if err != nil {
		return pgResult{}, fmt.Errorf("%v: %s", err, out)
	}
	t, l := pgTPS.FindSubmatch(out), pgLat.FindSubmatch(out)
	if t == nil || l == nil {
		return pgResult{}, fmt.Errorf("no tps or latency in %q", out)
	}
	var r pgResult
	r.tps, _ = strconv.ParseFloat(string(t[1]), 64)
	r.latency, _ = strconv.ParseFloat(string(l[1]), 64)
	if c := pgConn.FindSubmatch(out); c != nil {
		r.connect, _ = strconv.ParseFloat(string(c[1]), 64)
	}
	return r, nil
}
