// Command agent measures what an idle agent costs: the resident memory and
// CPU of a server agent (Raft, CA) and of a client agent (bootstrapped with a
// CA token, tunnel up), each with one registered service, over a quiet
// window after they settle. It runs the real binary on loopback.
//
//	go run ./bench/agent [-bin bin/meshwork] [-settle 75s] [-window 30s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var (
	binFlag = flag.String("bin", "bin/meshwork", "the meshwork binary, as make build makes it")
	settle  = flag.Duration("settle", 75*time.Second, "wait after start before measuring (past the agent's second release of its executable pages, 60s after start)")
	window  = flag.Duration("window", 30*time.Second, "measurement window")
)

const (
	serverIP = "127.77.0.1"
	clientIP = "127.77.0.2"
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent:", err)
		os.Exit(1)
	}
}

func run() error {
	bin, err := binary(*binFlag)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "meshwork-bench-agent-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	key := func() (string, error) {
		out, err := exec.Command(bin, "keygen").Output()
		return strings.TrimSpace(string(out)), err
	}
	enc, err := key()
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	ck, err := key()
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}

	common := func(node, ip string) string {
		return fmt.Sprintf("node: %s\ndata_dir: %s\nbind: %s\nadvertise: %s\naddresses: {http: %s, dns: %s}\n"+
			"encrypt: %q\ncluster_key: %q\nlog_level: warn\ntunnel: {vip_range: 127.%d.0.0/16}\n"+
			"services:\n  - name: svc-%s\n    port: 9000\n",
			node, filepath.Join(dir, node), ip, ip, ip, ip, enc, ck, map[string]int{"server": 241, "client": 242}[node], node)
	}
	server, err := start(bin, dir, "server", common("server", serverIP)+"server: true\nbootstrap_expect: 1\n")
	if err != nil {
		return err
	}
	defer server.stop()
	serverAPI := "--http-addr=" + serverIP + ":8500"
	if err := waitFor(60*time.Second, "the server's CA", func() error {
		return exec.Command(bin, "ca", "roots", serverAPI).Run()
	}); err != nil {
		return err
	}
	tok, err := exec.Command(bin, "ca", "token", "client", serverAPI).Output()
	if err != nil {
		return fmt.Errorf("ca token: %w", err)
	}
	tokenFile := filepath.Join(dir, "client.token")
	if err := os.WriteFile(tokenFile, []byte(strings.TrimSpace(lastLine(string(tok)))), 0o600); err != nil {
		return err
	}
	client, err := start(bin, dir, "client", common("client", clientIP)+
		fmt.Sprintf("retry_join: [%s]\nca: {token_file: %s}\n", serverIP, tokenFile))
	if err != nil {
		return err
	}
	defer client.stop()
	if err := waitFor(60*time.Second, "the client's certificate", func() error {
		return exec.Command(bin, "ca", "cert", "--http-addr="+clientIP+":8500").Run()
	}); err != nil {
		return err
	}

	fmt.Printf("bench/agent: one server (Raft, CA) and one client (certificate, tunnel), one service each, on loopback\n")
	fmt.Printf("settle %s, then measure over %s\n\n", *settle, *window)
	time.Sleep(*settle) // letting start-up allocations settle before measuring; not synchronisation

	before := map[string]cpuSample{}
	for _, p := range []*proc{server, client} {
		s, err := sampleCPU(p.cmd.Process.Pid)
		if err != nil {
			return p.exited()
		}
		before[p.name] = s
	}
	time.Sleep(*window) // the measurement window itself
	fmt.Println("| agent | RSS | peak RSS | CPU (% of one core) |")
	fmt.Println("|---|---|---|---|")
	for _, p := range []*proc{server, client} {
		after, err := sampleCPU(p.cmd.Process.Pid)
		if err != nil {
			return p.exited()
		}
		rss, hwm, err := memory(p.cmd.Process.Pid)
		if err != nil {
			return err
		}
		b := before[p.name]
		cpu := float64(after.ticks-b.ticks) / float64(clockTicks) / after.at.Sub(b.at).Seconds() * 100
		fmt.Printf("| %s | %.1f MiB | %.1f MiB | %.2f %% |\n", p.name, float64(rss)/1024, float64(hwm)/1024, cpu)
	}
	return nil
}

// binary returns path. A missing binary is an error rather than built here:
// the figures are those of the release build (make build: its tags leave out
// smallstep's databases and KMSes, which changes the resident memory).
func binary(path string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w (run make build first)", err)
	}
	return filepath.Abs(path)
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// exited reports an agent that stopped before the measurement, with the end
// of its log.
func (p *proc) exited() error {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return fmt.Errorf("the %s agent exited:\n%s", p.name, b)
}

func start(bin, dir, name, config string) (*proc, error) {
	conf := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		return nil, err
	}
	// Each agent runs its own copy of the executable, as it would on its
	// own host. Sharing one file would share its page-cache pages between
	// the two processes, count them in both RSS figures, and keep the
	// agent's release of its executable pages (MADV_PAGEOUT skips pages
	// that another process maps) from taking effect.
	own := filepath.Join(dir, name+"-meshwork")
	if err := copyFile(bin, own); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(own, "agent", "--config", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// stop ends the agent this program started, by its PID.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func waitFor(d time.Duration, what string, cond func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times.
const clockTicks = 100

type cpuSample struct {
	ticks int64
	at    time.Time
}

// sampleCPU reads utime+stime of a process.
func sampleCPU(pid int) (cpuSample, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuSample{}, err
	}
	// The command name may hold spaces: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return cpuSample{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return cpuSample{}, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return cpuSample{ticks: ut + st, at: time.Now()}, nil
}

// memory returns VmRSS and VmHWM in KiB.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm, nil
}
