// Command dns benchmarks the Meshwork DNS server against CoreDNS with
// dnsperf, in one run, on loopback.
//
// It builds a catalog of 100 services (3 instances each, on 30 nodes),
// starts the real dnsserver over it in a child process, writes the same
// names as a zone file for CoreDNS's file plugin and starts coredns, checks
// that both give the same answers, then runs dnsperf against each with the
// same query mix (a third each: service A, SRV, NXDOMAIN):
//
//  1. at full speed, for the maximum QPS and the latency percentiles;
//  2. limited to 50% of that server's own maximum (dnsperf -Q), for p99.
//
// dnsperf 2.10 (Debian 12) prints only the average and standard deviation
// of latency, so every run uses -v, which prints each query's latency, into
// a file read after the run, and the percentiles come from those.
//
// By default the servers share CPU 0 (one at a time) and dnsperf runs on
// CPU 1 (taskset), so that the client does not steal the server's core.
//
//	scripts/deps.sh bench   # dnsperf, coredns
//	go run ./bench/dns -duration 10s
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/dnsserver"
	"github.com/meshwork/meshwork/internal/freeport"
)

const (
	instancesPerService = 3
	nodes               = 30
)

func main() {
	var (
		serve     = flag.Bool("serve", false, "internal: run the Meshwork DNS server and print READY <addr>")
		addr      = flag.String("addr", "127.0.0.1:0", "internal: -serve address")
		services  = flag.Int("services", 100, "number of services in the catalog and the zone")
		duration  = flag.Duration("duration", 10*time.Second, "length of each dnsperf run")
		clients   = flag.Int("clients", 4, "dnsperf -c: client sockets")
		inflight  = flag.Int("outstanding", 100, "dnsperf -q: queries in flight")
		pin       = flag.Bool("pin", runtime.NumCPU() >= 2, "run the servers on CPU 0 and dnsperf on CPU 1 (taskset)")
		corednsF  = flag.String("coredns", "", "coredns binary (default: $(go env GOPATH)/bin/coredns, then PATH)")
		dnsperfF  = flag.String("dnsperf", "dnsperf", "dnsperf binary")
		udpReader = flag.Int("udp-readers", 0, "internal: dnsserver UDPReaders (0: default)")
	)
	flag.Parse()
	if *serve {
		if err := runServer(*addr, *services, *udpReader); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Every run is bounded; the whole benchmark is too.
	ctx, cancel := context.WithTimeout(ctx, 8*(*duration)+3*time.Minute)
	defer cancel()
	b := &bench{services: *services, duration: *duration, clients: *clients, outstanding: *inflight,
		pin: *pin, dnsperf: *dnsperfF, coredns: *corednsF, udpReaders: *udpReader}
	if err := b.run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dns:", err)
		os.Exit(1)
	}
}

// members is the benchmark catalog: service i has instances on nodes
// (3i+j) mod 30, all passing.
func members(services int) []catalog.Member {
	ms := make([]catalog.Member, nodes)
	for n := range ms {
		ms[n] = catalog.Member{Status: catalog.StatusAlive, Record: catalog.Record{
			Node: fmt.Sprintf("node-%02d", n), Addr: fmt.Sprintf("10.0.0.%d", n+1)}}
	}
	for i := 0; i < services; i++ {
		for j := 0; j < instancesPerService; j++ {
			m := &ms[(instancesPerService*i+j)%nodes]
			m.Services = append(m.Services, catalog.Service{
				ID: fmt.Sprintf("svc%03d", i), Name: fmt.Sprintf("svc%03d", i), Port: 8000 + i, Health: catalog.Passing})
		}
	}
	return ms
}

// zone renders the catalog as the zone the Meshwork server answers, for
// CoreDNS: same names, same records, same TTLs.
func zone(ms []catalog.Member) string {
	var b strings.Builder
	b.WriteString("$ORIGIN mesh.\n")
	b.WriteString("@ 5 IN SOA ns.mesh. hostmaster.mesh. 1 3600 600 86400 5\n")
	b.WriteString("@ 30 IN NS ns.mesh.\n")
	b.WriteString("ns 30 IN A 127.0.0.1\n")
	for _, m := range ms {
		fmt.Fprintf(&b, "%s.node 30 IN A %s\n", m.Node, m.Addr)
		for _, s := range m.Services {
			fmt.Fprintf(&b, "%s.service 0 IN A %s\n", s.Name, m.Addr)
			fmt.Fprintf(&b, "%s.service 0 IN SRV 1 1 %d %s.node.mesh.\n", s.Name, s.Port, m.Node)
			fmt.Fprintf(&b, "_%s._tcp.service 0 IN SRV 1 1 %d %s.node.mesh.\n", s.Name, s.Port, m.Node)
		}
	}
	return b.String()
}

// queryMix is the dnsperf input: service A, SRV and NXDOMAIN, a third each,
// interleaved.
func queryMix(services int) string {
	var b strings.Builder
	for i := 0; i < services; i++ {
		fmt.Fprintf(&b, "svc%03d.service.mesh A\n", i)
		fmt.Fprintf(&b, "_svc%03d._tcp.service.mesh SRV\n", (i*37)%services)
		fmt.Fprintf(&b, "nx%03d.service.mesh A\n", i)
	}
	return b.String()
}

// runServer is the child process: the real dnsserver with metrics on, as
// the agent runs it.
func runServer(addr string, services, readers int) error {
	store := catalog.NewStore()
	store.Publish(members(services))
	cfg := dnsserver.DefaultConfig()
	cfg.UDPReaders = readers
	s, err := dnsserver.New(cfg, dnsserver.Deps{
		Catalog:    store,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		return err
	}
	pc, l, err := dnsserver.Listen(addr)
	if err != nil {
		return err
	}
	if err := s.Start(context.Background(), pc, l); err != nil {
		return err
	}
	fmt.Println("READY", pc.LocalAddr())
	// Run until the parent closes stdin or signals.
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-done:
	case <-sig:
	}
	return s.Close()
}

type bench struct {
	services, clients, outstanding, udpReaders int
	duration                                   time.Duration
	pin                                        bool
	dnsperf, coredns                           string
	dir                                        string
}

// result is one dnsperf run.
type result struct {
	qps           float64
	sent, lost    int
	avg, stddev   float64 // seconds
	p50, p90, p99 float64
	p999          float64
	n             int // latencies read
}

func (b *bench) run(ctx context.Context) error {
	for _, tool := range []*string{&b.dnsperf} {
		if _, err := exec.LookPath(*tool); err != nil {
			return fmt.Errorf("%s not found: run scripts/deps.sh bench", *tool)
		}
	}
	if b.coredns == "" {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		b.coredns = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "coredns")
		if _, err := os.Stat(b.coredns); err != nil {
			b.coredns = "coredns"
		}
	}
	if _, err := exec.LookPath(b.coredns); err != nil {
		return fmt.Errorf("coredns not found (%s): run scripts/deps.sh bench", b.coredns)
	}
	if b.pin {
		if _, err := exec.LookPath("taskset"); err != nil {
			return errors.New("taskset not found: install util-linux or use -pin=false")
		}
	}
	dir, err := os.MkdirTemp("", "meshwork-bench-dns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b.dir = dir

	ms := members(b.services)
	queries := filepath.Join(dir, "queries.txt")
	if err := os.WriteFile(queries, []byte(queryMix(b.services)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "db.mesh"), []byte(zone(ms)), 0o644); err != nil {
		return err
	}

	meshAddr, stopMesh, err := b.startMeshwork(ctx)
	if err != nil {
		return err
	}
	defer stopMesh()
	coreAddr, stopCore, err := b.startCoreDNS(ctx)
	if err != nil {
		return err
	}
	defer stopCore()
	if err := compare(meshAddr, coreAddr, queryMix(b.services)); err != nil {
		return fmt.Errorf("the two servers disagree, the comparison would be void: %w", err)
	}

	fmt.Printf("dnsperf %s, %d services x %d instances, %s per run, -c %d -q %d, pinned: %v, GOMAXPROCS of the servers: %s\n",
		dnsperfVersion(b.dnsperf), b.services, instancesPerService, b.duration, b.clients, b.outstanding, b.pin, serverProcs(b.pin))
	servers := []struct{ name, addr string }{{"meshwork", meshAddr}, {"coredns", coreAddr}}
	max := map[string]result{}
	half := map[string]result{}
	for _, s := range servers {
		r, err := b.dnsperfRun(ctx, s.addr, queries, 0, s.name+"-max")
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		max[s.name] = r
		printResult(s.name, "max", r)
	}
	for _, s := range servers {
		target := int(max[s.name].qps / 2)
		r, err := b.dnsperfRun(ctx, s.addr, queries, target, s.name+"-half")
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		half[s.name] = r
		printResult(s.name, fmt.Sprintf("50%% (-Q %d)", target), r)
	}
	m, c := max["meshwork"], max["coredns"]
	ratio := m.qps / c.qps
	fmt.Printf("\nratio meshwork/coredns max QPS: %.2fx (target >= 1.5x: %s)\n", ratio, pass(ratio >= 1.5))
	fmt.Printf("meshwork p99 at 50%% load: %s (target <= 1 ms: %s); coredns: %s\n",
		ms3(half["meshwork"].p99), pass(half["meshwork"].p99 <= 1e-3), ms3(half["coredns"].p99))
	fmt.Println("\nmarkdown:")
	fmt.Println("| server | max QPS | lost | p50 | p90 | p99 | p99.9 | QPS at 50% | p50 at 50% | p99 at 50% | p99.9 at 50% |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range servers {
		r, h := max[s.name], half[s.name]
		fmt.Printf("| %s | %.0f | %d | %s | %s | %s | %s | %.0f | %s | %s | %s |\n", s.name, r.qps, r.lost,
			ms3(r.p50), ms3(r.p90), ms3(r.p99), ms3(r.p999), h.qps, ms3(h.p50), ms3(h.p99), ms3(h.p999))
	}
	return nil
}

func pass(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func ms3(s float64) string { return fmt.Sprintf("%.3f ms", s*1e3) }

func serverProcs(pin bool) string {
	if pin {
		return "1 (CPU 0)"
	}
	return strconv.Itoa(runtime.NumCPU())
}

func dnsperfVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	if m := regexp.MustCompile(`Version (\S+)`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "?"
}

// command runs name pinned to cpu when pinning.
func (b *bench) command(ctx context.Context, cpu string, name string, args ...string) *exec.Cmd {
	if b.pin {
		return exec.CommandContext(ctx, "taskset", append([]string{"-c", cpu, name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// startMeshwork runs this program with -serve on CPU 0 and returns its
// address and a function that stops it.
func (b *bench) startMeshwork(ctx context.Context) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := b.command(ctx, "0", self, "-serve", "-services", strconv.Itoa(b.services), "-udp-readers", strconv.Itoa(b.udpReaders))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() // by PID: the child we started
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				line <- strings.TrimPrefix(sc.Text(), "READY ")
			}
		}
	}()
	select {
	case addr := <-line:
		return addr, stop, nil
	case <-time.After(30 * time.Second):
		stop()
		return "", nil, errors.New("meshwork server did not start within 30s")
	case <-ctx.Done():
		stop()
		return "", nil, ctx.Err()
	}
}

// startCoreDNS writes a Corefile serving db.mesh with the file plugin,
// starts coredns on CPU 0, and waits until it answers.
func (b *bench) startCoreDNS(ctx context.Context) (string, func(), error) {
	port, err := freeport.TCPAndUDP("127.0.0.1")
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	corefile := filepath.Join(b.dir, "Corefile")
	conf := fmt.Sprintf("mesh.:%d {\n    bind 127.0.0.1\n    file %s\n}\n", port, filepath.Join(b.dir, "db.mesh"))
	if err := os.WriteFile(corefile, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	cmd := b.command(ctx, "0", b.coredns, "-conf", corefile, "-quiet")
	cmd.Dir = b.dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM) // by PID: the child we started
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("mesh.", dns.TypeSOA)
	for {
		if r, _, err := c.Exchange(m, addr); err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
			return addr, stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, errors.New("coredns did not answer within 30s")
		}
		time.Sleep(50 * time.Millisecond) // polling a readiness condition, with a deadline
	}
}

// compare asks both servers every query of the mix and checks they give
// the same RCODE, answer and additional records (order and TTL aside), and
// the SOA in negative answers.
func compare(a, b, mix string) error {
	c := &dns.Client{Timeout: 2 * time.Second}
	for _, line := range strings.Split(strings.TrimSpace(mix), "\n") {
		f := strings.Fields(line)
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(f[0]), dns.StringToType[f[1]])
		ra, _, err := c.Exchange(m, a)
		if err != nil {
			return fmt.Errorf("%s: meshwork: %w", line, err)
		}
		rb, _, err := c.Exchange(m, b)
		if err != nil {
			return fmt.Errorf("%s: coredns: %w", line, err)
		}
		// CoreDNS also puts the NS in the authority section of positive
		// answers (RFC 2181 allows both); negative ones must carry the SOA.
		negative := len(ra.Answer) == 0
		if ra.Rcode != rb.Rcode || !slices.Equal(rrs(ra.Answer), rrs(rb.Answer)) || !slices.Equal(rrs(ra.Extra), rrs(rb.Extra)) ||
			negative && (len(ra.Ns) != 1 || len(rb.Ns) != 1 || ra.Ns[0].Header().Rrtype != rb.Ns[0].Header().Rrtype) {
			return fmt.Errorf("%s:\nmeshwork: %v\ncoredns: %v", line, ra, rb)
		}
	}
	return nil
}

func rrs(list []dns.RR) []string {
	var out []string
	for _, rr := range list {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		rr = dns.Copy(rr)
		rr.Header().Ttl = 0
		rr.Header().Name = strings.ToLower(rr.Header().Name)
		out = append(out, strings.ToLower(rr.String()))
	}
	sort.Strings(out)
	return out
}

var (
	reQPS    = regexp.MustCompile(`Queries per second:\s+([\d.]+)`)
	reSent   = regexp.MustCompile(`Queries sent:\s+(\d+)`)
	reLost   = regexp.MustCompile(`Queries lost:\s+(\d+)`)
	reAvg    = regexp.MustCompile(`Average Latency \(s\):\s+([\d.]+)`)
	reStddev = regexp.MustCompile(`Latency StdDev \(s\):\s+([\d.]+)`)
)

// dnsperfRun runs dnsperf on CPU 1 for the duration, at qps (0: as fast as
// it goes), with per-query output (-v) into a file, and reads the figures.
func (b *bench) dnsperfRun(ctx context.Context, addr, queries string, qps int, name string) (result, error) {
	host, port, _ := net.SplitHostPort(addr)
	secs := strconv.Itoa(int(math.Ceil(b.duration.Seconds())))
	args := []string{"-s", host, "-p", port, "-d", queries, "-l", secs, "-c", strconv.Itoa(b.clients),
		"-T", "1", "-q", strconv.Itoa(b.outstanding), "-t", "2", "-v"}
	if qps > 0 {
		args = append(args, "-Q", strconv.Itoa(qps))
	}
	ctx, cancel := context.WithTimeout(ctx, b.duration+30*time.Second)
	defer cancel()
	vfile := filepath.Join(b.dir, name+".v")
	out, err := os.Create(vfile)
	if err != nil {
		return result{}, err
	}
	defer out.Close()
	cmd := b.command(ctx, "1", b.dnsperf, args...)
	cmd.Stdout = out
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("dnsperf %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return result{}, err
	}
	var r result
	var lat []float64
	var summary strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "> ") {
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				lat = append(lat, v)
			}
			continue
		}
		summary.WriteString(line)
		summary.WriteByte('\n')
	}
	s := summary.String()
	r.qps = matchFloat(reQPS, s)
	r.sent = int(matchFloat(reSent, s))
	r.lost = int(matchFloat(reLost, s))
	r.avg = matchFloat(reAvg, s)
	r.stddev = matchFloat(reStddev, s)
	if r.qps == 0 || len(lat) == 0 {
		return r, fmt.Errorf("dnsperf printed no figures:\n%s%s", s, stderr.String())
	}
	sort.Float64s(lat)
	r.n = len(lat)
	r.p50, r.p90, r.p99, r.p999 = pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 99.9)
	return r, nil
}

func matchFloat(re *regexp.Regexp, s string) float64 {
	m := re.FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// pct is the nearest-rank percentile of sorted values.
func pct(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func printResult(name, load string, r result) {
	fmt.Printf("%-9s %-14s QPS %9.0f  sent %8d lost %5d  avg %s sd %s  p50 %s p90 %s p99 %s p99.9 %s\n",
		name, load, r.qps, r.sent, r.lost, ms3(r.avg), ms3(r.stddev), ms3(r.p50), ms3(r.p90), ms3(r.p99), ms3(r.p999))
}
