// Command transport benchmarks the Meshwork data plane in one run, on
// loopback: a client agent and a server agent (two child processes running
// transport over real QUIC and mutual TLS) against direct TCP, a pair of
// stunnel4 mTLS tunnels, a pair of HAProxy instances with TLS between them
// (TCP mode), and the same HAProxy pair relaying plain TCP: the least
// that any two proxies do. All five paths end at the same local services.
//
// It measures, path by path:
//
//  1. latency at a constant 1,000 req/s with 1 KiB HTTP responses (fortio,
//     8 keep-alive connections, their requests spread evenly in time),
//     p50/p90/p99, and what each tunnel adds to direct TCP; the paths take
//     turns over -rounds rounds, each path's rounds are pooled into one
//     histogram, and the tunnels' p99 is also compared round by round with
//     direct's; the CPU that the hypervisor stole during each round is
//     reported beside it;
//  2. single-connection throughput with iperf3, beside the raw capacity of
//     one quic-go stream on this machine (same TLS, same buffers, same
//     quic-go configuration; a sender and a receiver process of its own);
//  3. new TCP connections per second (connect, one byte each way, close);
//  4. the RSS and CPU of each path's two proxy processes during the
//     1,000 req/s run, and their CPU per GB during the iperf3 run (from
//     /proc), beside the CPU per GB of the raw quic-go stream;
//  5. the wake-up floor (-hops): what two forwarding processes that do no
//     work add to a one-byte round trip over pipes, the cost of waking a
//     process on this machine.
//
// Every path spans two hosts: host A runs the load generator and the
// client-side proxy, host B the services and the server-side proxy (and
// the raw quic-go sender and receiver likewise). With -pin (the default)
// each host is half of this machine's CPUs, set with taskset, so that the
// two ends never take each other's CPU, as on two machines (on this
// two-CPU machine, one CPU each).
// Without it every process may run anywhere. Each agent runs with
// GOMAXPROCS=1 (-agent-gomaxprocs). It writes its configs to a temporary
// directory, starts every process itself and stops each by its PID. Every
// load is bounded in time.
//
//	scripts/deps.sh bench   # stunnel4, haproxy, iperf3, fortio
//	go run ./bench/transport
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/freeport"
	"github.com/meshwork/meshwork/transport"
	"github.com/meshwork/meshwork/transport/transporttest"
)

const trustDomain = "bench.meshwork"

var (
	role       = flag.String("role", "", "internal: agent or backend")
	roleCfg    = flag.String("config", "", "internal: agent config file")
	httpAddr   = flag.String("http", "", "internal: backend HTTP address")
	connAddr   = flag.String("conn", "", "internal: backend one-byte echo address")
	latDur     = flag.Duration("latency-duration", 20*time.Second, "fortio run length per path and round")
	rounds     = flag.Int("rounds", 3, "latency rounds per path; the paths take turns, and each path's rounds are pooled into one histogram")
	qps        = flag.Int("qps", 1000, "fortio request rate")
	conns      = flag.Int("c", 8, "fortio connections")
	uniform    = flag.Bool("uniform", true, "spread the fortio connections' requests evenly in time (false: every connection fires at once, in bursts)")
	tputDur    = flag.Duration("throughput-duration", 10*time.Second, "iperf3 and raw quic-go run length")
	tputRounds = flag.Int("throughput-rounds", 3, "throughput rounds; the paths and raw quic-go take turns, and each is reported by its median round")
	rateDur    = flag.Duration("conn-duration", 5*time.Second, "connection-rate run length per path")
	workers    = flag.Int("conn-workers", 8, "concurrent connectors for the connection rate")
	only       = flag.String("paths", "direct,mesh,stunnel,haproxy,relay", "paths to measure (relay: a pair of HAProxy instances relaying plain TCP, the least that two proxies do)")
	fortioBin  = flag.String("fortio", "", "fortio binary (default: $(go env GOPATH)/bin/fortio, then PATH)")
	profDir    = flag.String("profile", "", "write the agents' CPU profiles to this directory")
	copyBuf    = flag.Int("copy-buffer", 0, "agents' transport CopyBuffer (0: default)")
	maxWindow  = flag.Uint64("max-stream-window", 0, "agents' transport MaxStreamWindow (0: default)")
	agentProcs = flag.Int("agent-gomaxprocs", 1, "GOMAXPROCS of each agent and raw quic-go end (0: Go's default, the CPUs it may run on)")
	agentEnv   = flag.String("agent-env", "", "extra environment of each agent, comma-separated (for example GOGC=200,GODEBUG=gctrace=1)")
	cpuProf    = flag.String("cpuprofile", "", "internal: agent CPU profile file")
	target     = flag.String("target", "", "internal: connection-rate target address")
	hopTrips   = flag.Int("hops", 3000, "round trips per round of the wake-up floor (one byte through processes that do no work; 0: skip it)")
	pin        = flag.Bool("pin", true, "run host A's processes (load generators, client proxies) on the lower half of the CPUs and host B's (services, server proxies) on the upper half, as two hosts")
)

func main() {
	flag.Parse()
	switch *role {
	case "agent":
		if err := runAgent(*roleCfg); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(1)
		}
		return
	case "backend":
		if err := runBackend(*httpAddr, *connAddr); err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(1)
		}
		return
	case "raw-receiver", "raw-sender":
		if err := runRawRole(*roleCfg, *role == "raw-receiver"); err != nil {
			fmt.Fprintln(os.Stderr, *role+":", err)
			os.Exit(1)
		}
		return
	case "connrate":
		runConnRate(*target)
		return
	case "hop-origin", "hop-forward", "hop-echo":
		if err := runHopRole(*role, *hopTrips); err != nil {
			fmt.Fprintln(os.Stderr, *role+":", err)
			os.Exit(1)
		}
		return
	}
	if *profDir != "" {
		// The agents open their profiles there; make it now so that a
		// missing directory is not an agent that "did not start".
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench: -profile:", err)
			os.Exit(1)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	procs := &procSet{}
	err := run(ctx, procs)
	procs.stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// path is one way from the load generator to the services.
type path struct {
	pids                  map[string]int // its proxy processes
	latUse, tputUse       map[string]*resUsage
	name                  string
	http, iperf, connRate string // addresses
	lat                   *latency
	tputs                 []float64 // bit/s, one per throughput round
	tputUses              []map[string]*resUsage
	tput                  float64 // bit/s, the median round
	// tputPaired is the median over the rounds of this path's throughput
	// over raw quic-go's in the same round.
	tputPaired float64
	rate       float64 // connections/s
	rateErrs   int
}

func run(ctx context.Context, procs *procSet) error {
	dir, err := os.MkdirTemp("", "meshwork-bench-transport-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fortio, err := findFortio()
	if err != nil {
		return err
	}
	if *rounds < 1 {
		return fmt.Errorf("-rounds %d: need at least one", *rounds)
	}
	if *tputRounds < 1 {
		return fmt.Errorf("-throughput-rounds %d: need at least one", *tputRounds)
	}
	hostA, hostB := cpuhost.Pair(*pin)
	for _, bin := range []string{"iperf3", "stunnel4", "haproxy", "taskset"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found: run scripts/deps.sh bench", bin)
		}
	}

	// Certificates: one root, a leaf per side, PEM files for the peers.
	ca, err := transporttest.NewCA(trustDomain)
	if err != nil {
		return err
	}
	rootFile := filepath.Join(dir, "ca.crt")
	if err := ca.WriteRootPEM(rootFile); err != nil {
		return err
	}
	certs := map[string][3]string{}
	for node, svcs := range map[string][]string{"server": {"web", "iperf", "conn"}, "client": {"load"}} {
		leaf, err := ca.IssueNode(node, svcs, 24*time.Hour)
		if err != nil {
			return err
		}
		crt, key, both, err := transporttest.WritePEM(dir, node, leaf)
		if err != nil {
			return err
		}
		certs[node] = [3]string{crt, key, both}
	}

	// Local services: HTTP, one-byte echo (backend child), iperf3 server.
	ports, err := freePorts(24)
	if err != nil {
		return err
	}
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	web, conn, iperfPort := next(), next(), next()
	direct := &path{name: "direct",
		http: addr(web), iperf: addr(iperfPort), connRate: addr(conn)}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin, args := hostB.Command(self, "-role", "backend", "-http", direct.http, "-conn", direct.connRate)
	if _, err := procs.start(ctx, "backend", "READY", bin, args...); err != nil {
		return err
	}
	bin, args = hostB.Command("iperf3", "-s", "--forceflush", "-B", "127.0.0.1", "-p", strconv.Itoa(iperfPort))
	if _, err := procs.start(ctx, "iperf3-server", "Server listening", bin, args...); err != nil {
		return err
	}

	// The mesh: two agents.
	serverUDP, clientUDP := next(), next()
	members := []catalog.Member{
		{Status: catalog.StatusAlive, Record: catalog.Record{Node: "server", Addr: "127.0.0.1", TunnelPort: serverUDP, Services: []catalog.Service{
			{ID: "web", Name: "web", Port: web, Health: catalog.Passing},
			{ID: "iperf", Name: "iperf", Port: iperfPort, Health: catalog.Passing},
			{ID: "conn", Name: "conn", Port: conn, Health: catalog.Passing},
		}}},
		{Status: catalog.StatusAlive, Record: catalog.Record{Node: "client", Addr: "127.0.0.1", TunnelPort: clientUDP}},
	}
	agents := map[string]*proc{}
	var ready readyLine
	for _, node := range []string{"server", "client"} {
		ac := agentConfig{
			CopyBuffer: *copyBuf, MaxStreamWindow: *maxWindow,
			Node: node, TrustDomain: trustDomain, Members: members,
			CertFile: certs[node][0], KeyFile: certs[node][1], RootsFile: rootFile,
		}
		if node == "server" {
			ac.Listen = addr(serverUDP)
			ac.DisableVIPs = true
			ac.Local = []transport.LocalService{
				{Name: "web", Ports: []int{web}}, {Name: "iperf", Ports: []int{iperfPort}}, {Name: "conn", Ports: []int{conn}},
			}
		} else {
			ac.Listen = addr(clientUDP)
			ac.VIPRange = "127.250.0.0/16"
			ac.Wait = []string{fmt.Sprintf("web:%d", web), fmt.Sprintf("iperf:%d", iperfPort), fmt.Sprintf("conn:%d", conn)}
		}
		f := filepath.Join(dir, node+"-agent.json")
		b, _ := json.MarshalIndent(ac, "", "  ")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return err
		}
		args := []string{"-role", "agent", "-config", f}
		if *profDir != "" {
			args = append(args, "-cpuprofile", filepath.Join(*profDir, node+"-agent.pprof"))
		}
		h := hostA
		if node == "server" {
			h = hostB
		}
		bin, args := h.Command(self, args...)
		p, err := procs.startEnv(ctx, node+"-agent", "READY", agentEnvironment(), bin, args...)
		if err != nil {
			return err
		}
		agents[node] = p
		if node == "client" {
			if err := json.Unmarshal([]byte(strings.TrimPrefix(p.ready, "READY ")), &ready); err != nil {
				return fmt.Errorf("client agent said %q: %w", p.ready, err)
			}
		}
	}
	mesh := &path{name: "mesh", pids: map[string]int{"client agent": agents["client"].pid(), "server agent": agents["server"].pid()},
		http:     ready.VIPs[fmt.Sprintf("web:%d", web)],
		iperf:    ready.VIPs[fmt.Sprintf("iperf:%d", iperfPort)],
		connRate: ready.VIPs[fmt.Sprintf("conn:%d", conn)],
	}

	// stunnel4 pair and HAProxy pair, each with three services.
	st, err := startStunnel(ctx, procs, hostA, hostB, dir, certs, rootFile, direct, next)
	if err != nil {
		return err
	}
	hp, err := startHAProxy(ctx, procs, hostA, hostB, dir, certs, rootFile, direct, next, true)
	if err != nil {
		return err
	}
	relay, err := startHAProxy(ctx, procs, hostA, hostB, dir, certs, rootFile, direct, next, false)
	if err != nil {
		return err
	}
	all := map[string]*path{"direct": direct, "mesh": mesh, "stunnel": st, "haproxy": hp, "relay": relay}
	var paths []*path
	for _, n := range strings.Split(*only, ",") {
		p, ok := all[strings.TrimSpace(n)]
		if !ok {
			return fmt.Errorf("unknown path %q", n)
		}
		paths = append(paths, p)
	}
	for _, p := range paths {
		if err := waitTCP(ctx, p.http); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}

	fmt.Printf("# meshwork transport benchmark: %s, %d CPUs, %s; %s, %s\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), loadavg(), hostA, hostB)
	// (1) latency, with the proxies' resources sampled during each run. The
	// paths take turns, round after round, in a rotating order, so that a
	// noisy spell of this machine does not land on one path only.
	lats := map[*path][]*latency{}
	uses := map[*path][]map[string]*resUsage{}
	for r := range *rounds {
		for i := range paths {
			p := paths[(i+r)%len(paths)]
			fmt.Printf("latency: %s, round %d of %d (%d req/s, %d connections, %s)...\n", p.name, r+1, *rounds, *qps, *conns, *latDur)
			sampler := startSampler(p.pids)
			steal0, total0 := cpuTimes()
			l, err := runFortio(ctx, hostA, fortio, dir, p)
			use := sampler.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			l.stolen = stolenSince(steal0, total0)
			fmt.Printf("  p50 %s, p90 %s, p99 %s, CPU stolen %.1f%%\n", ms(l.p50), ms(l.p90), ms(l.p99), 100*l.stolen)
			lats[p] = append(lats[p], l)
			uses[p] = append(uses[p], use)
		}
	}
	for _, p := range paths {
		p.lat, p.latUse = poolLatency(lats[p]), mergeUsage(uses[p])
		if p != direct {
			p.lat.pairedAdded = pairedAdded(lats[p], lats[direct])
		}
	}
	var floor hopFloor
	if *hopTrips > 0 {
		fmt.Printf("wake-up floor: %d round trips through 2 and 4 processes, %d rounds...\n", *hopTrips, *rounds)
		if floor, err = measureHops(ctx, self, hostA, hostB, *hopTrips, *rounds); err != nil {
			return fmt.Errorf("wake-up floor: %w", err)
		}
	}
	// GSO is known now that the agents have a connection.
	gso := agents["client"].ask("gso")

	// (2) throughput. The paths and raw quic-go take turns, round after
	// round, so that a noisy spell lands on all of them; each is reported
	// by its median round.
	var raws, rawGROs, rawOnes []rawResult
	for r := 1; r <= *tputRounds; r++ {
		for _, p := range paths {
			fmt.Printf("throughput: %s, round %d of %d (iperf3, %s)...\n", p.name, r, *tputRounds, *tputDur)
			sampler := startSampler(p.pids)
			bps, err := runIperf(ctx, hostA, p.iperf, *tputDur)
			use := sampler.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			p.tputs, p.tputUses = append(p.tputs, bps), append(p.tputUses, use)
			fmt.Printf("  %s\n", gbps(bps))
		}
		fmt.Printf("throughput: raw quic-go stream, round %d of %d (%s)...\n", r, *tputRounds, *tputDur)
		raw, err := rawQUIC(ctx, procs, hostA, hostB, dir, certs, rootFile, *tputDur, false)
		if err != nil {
			return fmt.Errorf("raw quic-go: %w", err)
		}
		fmt.Printf("  %s\n", gbps(raw.bps))
		fmt.Printf("throughput: raw quic-go stream on receive-offload sockets, round %d of %d (%s)...\n", r, *tputRounds, *tputDur)
		rawGRO, err := rawQUIC(ctx, procs, hostA, hostB, dir, certs, rootFile, *tputDur, true)
		if err != nil {
			return fmt.Errorf("raw quic-go with GRO: %w", err)
		}
		fmt.Printf("  %s\n", gbps(rawGRO.bps))
		fmt.Printf("throughput: raw quic-go stream, both ends in this process, round %d of %d (%s)...\n", r, *tputRounds, *tputDur)
		rawOne, err := rawQUICInProcess(dir, certs, rootFile, *tputDur)
		if err != nil {
			return fmt.Errorf("raw quic-go in one process: %w", err)
		}
		fmt.Printf("  %s\n", gbps(rawOne.bps))
		raws, rawGROs, rawOnes = append(raws, raw), append(rawGROs, rawGRO), append(rawOnes, rawOne)
	}
	for _, p := range paths {
		p.tput, p.tputUse = median(p.tputs), mergeUsage(p.tputUses)
		ratios := make([]float64, len(p.tputs))
		for i := range p.tputs {
			ratios[i] = p.tputs[i] / raws[i].bps
		}
		p.tputPaired = median(ratios)
	}

	// (3) connection rate.
	for _, p := range paths {
		fmt.Printf("connection rate: %s (%d workers, %s)...\n", p.name, *workers, *rateDur)
		if p.rate, p.rateErrs, err = measureConnRate(ctx, procs, hostA, p.connRate); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}

	report(paths, raws, rawGROs, rawOnes, floor, ready, gso)
	return nil
}

// agentEnvironment is the extra environment of the agents, and of the raw
// quic-go ends that stand for them.
func agentEnvironment() []string {
	var env []string
	if *agentProcs > 0 {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", *agentProcs))
	}
	if *agentEnv != "" {
		env = append(env, strings.Split(*agentEnv, ",")...)
	}
	return env
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// freePorts picks n distinct loopback ports, free for TCP and UDP, below
// the kernel's ephemeral range (internal/freeport).
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		p, err := freeport.TCPAndUDP("127.0.0.1")
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

func waitTCP(ctx context.Context, a string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s never accepted: %w", a, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func findFortio() (string, error) {
	if *fortioBin != "" {
		return *fortioBin, nil
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "fortio")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("fortio"); err == nil {
		return p, nil
	}
	return "", errors.New("fortio not found: run scripts/deps.sh bench")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load unknown"
	}
	f := strings.Fields(string(b))
	return "load average " + strings.Join(f[:3], " ")
}

// proc is a child process started by the benchmark.
type proc struct {
	name  string
	cmd   *exec.Cmd
	out   *bufio.Reader
	in    io.WriteCloser
	ready string
	mu    sync.Mutex
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// ask writes a command line to the child and returns its answer line.
func (p *proc) ask(cmd string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.in, cmd)
	line, _ := p.out.ReadString('\n')
	return strings.TrimSpace(line)
}

// procSet stops every child it started, by PID.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

// start runs a child; with a ready prefix it waits for a line holding it
// (the lines before are skipped).
func (s *procSet) start(ctx context.Context, name, ready string, bin string, args ...string) (*proc, error) {
	return s.startEnv(ctx, name, ready, nil, bin, args...)
}

// startEnv is start with extra environment variables.
func (s *procSet) startEnv(ctx context.Context, name, ready string, env []string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stderr = &prefixWriter{prefix: name + ": ", w: os.Stderr}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: bufio.NewReader(out), in: in}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	if ready == "" {
		go io.Copy(io.Discard, p.out)
		return p, nil
	}
	lines := make(chan string, 1)
	go func() {
		for {
			l, err := p.out.ReadString('\n')
			if strings.Contains(l, ready) || err != nil {
				lines <- strings.TrimSpace(l)
				if ready != "READY" { // not ours: drain it
					io.Copy(io.Discard, p.out)
				}
				return
			}
		}
	}()
	select {
	case l := <-lines:
		if !strings.Contains(l, ready) {
			return nil, fmt.Errorf("%s did not start (said %q)", name, l)
		}
		p.ready = l
	case <-time.After(20 * time.Second):
		return nil, fmt.Errorf("%s not ready after 20s", name)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p, nil
}

func (s *procSet) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		p.in.Close()
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			fmt.Fprintf(os.Stderr, "%s did not stop after SIGTERM; killing pid %d\n", p.name, p.pid())
			p.cmd.Process.Kill()
			<-done
		}
	}
	s.procs = nil
}

// prefixWriter prefixes each line a child writes to stderr.
type prefixWriter struct {
	prefix string
	w      io.Writer
	mu     sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
