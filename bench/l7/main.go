// Command l7 benchmarks the mesh's per-request (L7) path against its
// per-connection (L4) path, direct, and a pair of HAProxy instances in HTTP
// mode with TLS between them, in one run on loopback (issue 25).
//
// It starts everything itself in a temporary directory: an HTTP/1.1 app
// answering 1 KiB (Go net/http, a child process of its own), fortio's gRPC
// ping server as an h2c gRPC app, two meshwork agents of the release binary
// (a server agent that registers web-l4, web-l7 and ping, and a client agent
// bootstrapped with a CA token from it; ServiceDefaults give them the
// protocols tcp, http and grpc, applied with `meshwork policy apply`), and
// the HAProxy pair (mode http; the client end takes plain HTTP/1.1 and
// keeps mutual-TLS connections to the server end, which keeps plain
// connections to the app). The mesh paths are the client agent's VIPs of
// the services, resolved through its DNS.
//
// It measures, path by path:
//
//  1. latency at a steady 1,000 req/s (fortio, 16 keep-alive connections,
//     10 µs histogram buckets), p50/p99/p99.9, over -rounds rounds in which
//     the paths take turns, with what each adds to direct round by round;
//     the agents' and HAProxy's CPU per 1,000 requests, and the agents' RSS;
//  2. the maximum rate with wrk (HTTP/1.1, keep-alive), rounds likewise;
//  3. unary gRPC calls at 1,000/s with ghz (fortio's gRPC load when ghz is
//     missing), direct against the mesh.
//
// It then prints the figures side by side with the machine's load during
// the run, and checks each target of issue 25 (PASS/FAIL, informative: the
// exit status is 0 unless something broke). As on two machines, host A
// (the load generators, the client agent, the client HAProxy) and host B
// (the apps, the server agent, the server HAProxy) each get half of the
// CPUs with -pin. Every process it starts is stopped by its PID; every
// load is bounded in time; every address is on loopback.
//
//	scripts/deps.sh bench   # haproxy, wrk, fortio, ghz
//	make build
//	go run ./bench/l7
//
// With -telemetry it instead compares two meshes side by side, telemetry
// off and on, on the L7 and L4 paths at -qps (issue 28):
//
//	go run ./bench/l7 -telemetry
//
// With -resilience it compares, the same way, a mesh with retries, circuit
// breakers and outlier ejection off against one with them on, with
// nothing failing (issue 26).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/bench/internal/agentproc"
	"github.com/meshwork/meshwork/bench/internal/cpuhost"
	"github.com/meshwork/meshwork/internal/freeport"
)

var (
	role          = flag.String("role", "", "internal: app")
	listen        = flag.String("listen", "", "internal: the app's address")
	binFlag       = flag.String("bin", "bin/meshwork", "the meshwork binary, as make build makes it")
	serverIP      = flag.String("server-ip", "127.0.0.81", "loopback address of the server agent")
	clientIP      = flag.String("client-ip", "127.0.0.82", "loopback address of the client agent")
	rounds        = flag.Int("rounds", 3, "latency rounds; the paths take turns in a rotating order")
	duration      = flag.Duration("duration", 20*time.Second, "fortio run length per path and round")
	qps           = flag.Int("qps", 1000, "fortio request rate")
	conns         = flag.Int("c", 16, "fortio connections")
	uniform       = flag.Bool("uniform", true, "spread the fortio connections' requests evenly in time")
	wrkRounds     = flag.Int("wrk-rounds", 3, "maximum-rate rounds; each path is reported by its median round")
	wrkDuration   = flag.Duration("wrk-duration", 10*time.Second, "wrk run length per path and round")
	wrkThreads    = flag.Int("wrk-threads", 2, "wrk threads")
	wrkConns      = flag.Int("wrk-connections", 16, "wrk connections")
	grpcRounds    = flag.Int("grpc-rounds", 3, "gRPC rounds")
	grpcDuration  = flag.Duration("grpc-duration", 10*time.Second, "gRPC run length per path and round")
	grpcRate      = flag.Int("grpc-rate", 1000, "gRPC calls per second")
	grpcConc      = flag.Int("grpc-concurrency", 16, "gRPC concurrent calls (on one connection with ghz)")
	ghzBin        = flag.String("ghz", "ghz", "ghz binary (when missing, fortio's gRPC ping load is used)")
	agentProcs    = flag.Int("agent-gomaxprocs", 1, "GOMAXPROCS of each agent (0: Go's default)")
	hapThreads    = flag.Int("haproxy-threads", 1, "nbthread of each HAProxy, to match the agents' GOMAXPROCS")
	settle        = flag.Duration("settle", 70*time.Second, "wait from the agents' start before the first load: past the agent's second release of its executable pages, 60 s after start")
	telemetry     = flag.Bool("telemetry", false, "compare two meshes, telemetry off and on, on the L7 and L4 paths at -qps (issue 28), instead of the paths")
	resilience    = flag.Bool("resilience", false, "compare two meshes, resilience off and on (retries, circuit breakers, outlier ejection), on the L7 and L4 paths at -qps with nothing failing (issue 26), instead of the paths")
	same          = flag.Bool("same", false, "with -telemetry or -resilience, set the off mesh up as the on mesh: an A/A run that shows the comparison's own noise")
	onServerIP    = flag.String("on-server-ip", "127.0.0.83", "loopback address of the server agent of the \"on\" mesh, with -telemetry or -resilience")
	onClientIP    = flag.String("on-client-ip", "127.0.0.84", "loopback address of the client agent of the \"on\" mesh, with -telemetry or -resilience")
	interleave    = flag.Duration("interleave", 0, "with -telemetry or -resilience, also run the interleaved loads, L7 then L4, this long each: at each tick direct, off and on get one request each, all at once, so that the machine's noise lands on all alike")
	interleaveQPS = flag.Int("interleave-qps", 500, "requests per second per path of the interleaved loads")
	targets       = flag.String("targets", "", "internal: the interleaved load's name=url,...")
	realtime      = flag.Int("realtime", 0, "with -telemetry or -resilience, the SCHED_FIFO priority (1-99) of the agents, apps and load generators, so that other work on the machine cannot land in their tail; 0: the normal scheduler")
	pin           = flag.Bool("pin", true, "run host A's processes on the lower half of the CPUs and host B's on the upper half")
)

func init() {
	// The A/A flag's first name, still in docs/benchmarks.md's commands.
	flag.BoolVar(same, "telemetry-same", false, "the same as -same")
}

func main() {
	flag.Parse()
	if *role == "app" {
		if err := runApp(*listen); err != nil {
			fmt.Fprintln(os.Stderr, "app:", err)
			os.Exit(1)
		}
		return
	}
	if *role == "interleave" {
		if err := runInterleave(*targets, *qps, *duration, *conns); err != nil {
			fmt.Fprintln(os.Stderr, "interleave:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runner := run
	switch {
	case *telemetry && *resilience:
		fmt.Fprintln(os.Stderr, "bench/l7: -telemetry and -resilience are two runs")
		os.Exit(2)
	case *telemetry:
		runner = runTelemetry
	case *resilience:
		runner = runResilience
	}
	if err := runner(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench/l7:", err)
		os.Exit(1)
	}
}

// The HTTP paths, in their first round's order, and the gRPC ones.
const (
	pathDirect  = "direct"
	pathL4      = "L4"
	pathL7      = "L7"
	pathHAProxy = "HAProxy"
	pathMesh    = "mesh"
)

var httpPaths = []string{pathDirect, pathL4, pathL7, pathHAProxy}

func run(ctx context.Context) error {
	for _, n := range []int{*rounds, *wrkRounds, *grpcRounds} {
		if n < 1 {
			return fmt.Errorf("-rounds, -wrk-rounds and -grpc-rounds must be at least 1, not %d", n)
		}
	}
	fortio, err := findTool("fortio")
	if err != nil {
		return err
	}
	for _, tool := range []string{"haproxy", "wrk", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: scripts/deps.sh bench", tool)
		}
	}
	useGhz := true
	if p, err := findTool(*ghzBin); err == nil {
		*ghzBin = p
	} else {
		useGhz = false
		fmt.Println("ghz is missing (scripts/deps.sh bench): the gRPC figures come from fortio's gRPC ping load")
	}
	bin, err := agentproc.Binary(*binFlag)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "meshwork-bench-l7-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	procs := &procSet{}
	defer procs.stopAll()
	a, b := cpuhost.Pair(*pin)
	startLoad := loadAvg()

	// The apps, on host B.
	var ports [5]int
	for i := range ports {
		if ports[i], err = freeport.TCP("127.0.0.1"); err != nil {
			return err
		}
	}
	httpPort, grpcPort, grpcHTTPPort, frontPort, betweenPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	appAddr := addr(httpPort)
	app, err := startApp(procs, b, work, appAddr)
	if err != nil {
		return err
	}
	// fortio's server also serves HTTP echo: a port of its own, unused.
	grpcApp, err := procs.start(b, work, "grpc-app", fortio, "server", "-grpc-port", addr(grpcPort), "-http-port", addr(grpcHTTPPort),
		"-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled", "-loglevel", "Warning")
	if err != nil {
		return err
	}
	for _, p := range []struct {
		proc *proc
		addr string
	}{{app, appAddr}, {grpcApp, addr(grpcPort)}} {
		if err := waitTCP(ctx, p.addr); err != nil {
			return errors.Join(err, p.proc.exited())
		}
	}

	// The mesh.
	m := newMesh(bin, *serverIP, *clientIP, 243, "")
	defer m.stop()
	if err := m.start(ctx, a, b, work, httpPort, grpcPort); err != nil {
		return err
	}
	addrs := map[string]string{pathDirect: appAddr}
	for path, svc := range map[string]string{pathL4: svcL4, pathL7: svcL7, pathMesh: svcGRPC} {
		ip, err := m.vip(ctx, svc)
		if err != nil {
			return err
		}
		p := httpPort
		if svc == svcGRPC {
			p = grpcPort
		}
		addrs[path] = fmt.Sprintf("%s:%d", ip, p)
	}

	// The HAProxy pair.
	certFile, pairFile, err := writeHAProxyCert(work)
	if err != nil {
		return err
	}
	hpClient, hpServer, err := startHAProxy(procs, a, b, work, haproxyConfig{threads: *hapThreads,
		front: addr(frontPort), between: addr(betweenPort), app: appAddr, certFile: certFile, pairFile: pairFile})
	if err != nil {
		return err
	}
	addrs[pathHAProxy] = addr(frontPort)

	// Every HTTP path answers the app's 1 KiB before any load.
	for _, p := range httpPaths {
		if err := poll(ctx, 60*time.Second, "the "+p+" path", func() error {
			for _, pr := range []*proc{app, hpClient, hpServer} {
				if err := pr.exited(); err != nil {
					return err
				}
			}
			if err := m.alive(); err != nil {
				return err
			}
			return getBody(ctx, addrs[p])
		}); err != nil {
			return err
		}
	}
	proto := filepath.Join(work, "ping.proto")
	if err := os.WriteFile(proto, []byte(pingProto), 0o600); err != nil {
		return err
	}

	// Every run samples every process, so that the rest of the machine is
	// what none of them used.
	pids := m.pids()
	pids["HAProxy client"], pids["HAProxy server"] = hpClient.pid(), hpServer.pid()
	pids["app"], pids["gRPC app"] = app.pid(), grpcApp.pid()
	fmt.Printf("bench/l7: %s: load generators, client agent %s, client HAProxy; %s: apps, server agent %s, server HAProxy\n", a, *clientIP, b, *serverIP)
	for _, p := range httpPaths {
		fmt.Printf("  %-8s http://%s/\n", p, addrs[p])
	}
	fmt.Printf("  gRPC: direct %s, mesh %s\n", addr(grpcPort), addrs[pathMesh])

	if wait := *settle - time.Since(m.started); wait > 0 {
		fmt.Printf("settling for %s\n", wait.Round(time.Second))
		// Letting the agents' start-up memory settle before measuring;
		// not synchronisation.
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	rep := &report{startLoad: startLoad, useGhz: useGhz}
	streams := func() float64 {
		n, err := inboundStreams(ctx, m.api["server"])
		if err != nil && rep.spliceErr == nil {
			rep.spliceErr = err
		}
		return n
	}
	l4Before := streams()
	turns := func(what string, n int, paths []string, load func(path string) (*result, error), keep func(string, *result)) error {
		for r := range n {
			for _, p := range rotate(paths, r) {
				fmt.Printf("round %d/%d: %s %s\n", r+1, n, what, p)
				res, err := measure(pids, func() (*result, error) { return load(p) })
				if err != nil {
					return fmt.Errorf("%s on the %s path: %w", what, p, err)
				}
				keep(p, res)
				if err := m.alive(); err != nil {
					return err
				}
			}
		}
		return nil
	}

	// 1. Latency at 1,000 req/s. The L4 splice's streams during the L7
	// rounds tell whether the L7 path was carried per connection.
	if err := turns("fortio", *rounds, httpPaths, func(p string) (*result, error) {
		before := streams()
		res, err := fortioHTTP(ctx, a, fortio, work, "http://"+addrs[p]+"/")
		if p == pathL7 {
			rep.l7SpliceStreams += streams() - before
		}
		return res, err
	}, rep.addLatency); err != nil {
		return err
	}
	rep.fortioLoad = loadAvg()

	// 2. Maximum rate.
	if err := turns("wrk", *wrkRounds, httpPaths, func(p string) (*result, error) {
		return runWrk(ctx, a, "http://"+addrs[p]+"/")
	}, rep.addMax); err != nil {
		return err
	}
	rep.wrkLoad = loadAvg()

	// 3. gRPC unary calls.
	grpcAddrs := map[string]string{pathDirect: addr(grpcPort), pathMesh: addrs[pathMesh]}
	if err := turns("gRPC", *grpcRounds, []string{pathDirect, pathMesh}, func(p string) (*result, error) {
		before := streams()
		defer func() {
			if p == pathMesh {
				rep.grpcSpliceStreams += streams() - before
			}
		}()
		if useGhz {
			return runGhz(ctx, a, proto, grpcAddrs[p])
		}
		return fortioGRPC(ctx, a, fortio, work, grpcAddrs[p])
	}, rep.addGRPC); err != nil {
		return err
	}
	rep.endLoad = loadAvg()

	// 4. A 1 GiB upload through the L7 path: the agents' memory while it
	// streams.
	up, err := measure(pids, func() (*result, error) { return upload(ctx, "http://"+addrs[pathL7]+"/upload") })
	if err != nil {
		return err
	}
	rep.upload = up

	rep.spliceStreams = streams() - l4Before
	rep.peak = map[string]int64{}
	for name, pid := range m.pids() {
		if _, hwm, err := agentproc.Memory(pid); err == nil {
			rep.peak[name] = hwm
		}
	}
	rep.print(os.Stdout)
	return nil
}

// measure runs one load while sampling the processes in pids and the
// machine.
func measure(pids map[string]int, load func() (*result, error)) (*result, error) {
	s := startSampler(pids)
	res, err := load()
	use, mach := s.stop()
	if err != nil {
		return nil, err
	}
	res.use, res.mach = use, mach
	return res, nil
}

// rotate is paths starting at the r-th, so that no path always runs first
// or last in a round.
func rotate(paths []string, r int) []string {
	k := r % len(paths)
	return append(append([]string{}, paths[k:]...), paths[:k]...)
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// findTool finds a tool in PATH, then in $(go env GOPATH)/bin, where
// scripts/deps.sh installs the Go ones.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%s is missing: scripts/deps.sh bench", name)
}
