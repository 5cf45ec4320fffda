// Command agent measures what an idle agent costs: the resident memory and
// CPU of a server agent (Raft, CA) and of a client agent (bootstrapped with a
// CA token, tunnel up), each with one registered service, over a quiet
// window after they settle. It runs the real binary on loopback.
//
//	go run ./bench/agent [-bin bin/meshwork] [-settle 75s] [-window 30s]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshwork/meshwork/bench/internal/agentproc"
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
	bin, err := agentproc.Binary(*binFlag)
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
	server, err := agentproc.Start(bin, dir, "server", common("server", serverIP)+"server: true\nbootstrap_expect: 1\n")
	if err != nil {
		return err
	}
	defer server.Stop()
	serverAPI := "--http-addr=" + serverIP + ":8500"
	if err := agentproc.WaitFor(60*time.Second, "the server's CA", func() error {
		return exec.Command(bin, "ca", "roots", serverAPI).Run()
	}); err != nil {
		return err
	}
	tok, err := exec.Command(bin, "ca", "token", "client", serverAPI).Output()
	if err != nil {
		return fmt.Errorf("ca token: %w", err)
	}
	tokenFile := filepath.Join(dir, "client.token")
	if err := os.WriteFile(tokenFile, []byte(strings.TrimSpace(agentproc.LastLine(string(tok)))), 0o600); err != nil {
		return err
	}
	client, err := agentproc.Start(bin, dir, "client", common("client", clientIP)+
		fmt.Sprintf("retry_join: [%s]\nca: {token_file: %s}\n", serverIP, tokenFile))
	if err != nil {
		return err
	}
	defer client.Stop()
	if err := agentproc.WaitFor(60*time.Second, "the client's certificate", func() error {
		return exec.Command(bin, "ca", "cert", "--http-addr="+clientIP+":8500").Run()
	}); err != nil {
		return err
	}

	fmt.Printf("bench/agent: one server (Raft, CA) and one client (certificate, tunnel), one service each, on loopback\n")
	fmt.Printf("settle %s, then measure over %s\n\n", *settle, *window)
	time.Sleep(*settle) // letting start-up allocations settle before measuring; not synchronisation

	before := map[string]cpuSample{}
	for _, p := range []*agentproc.Proc{server, client} {
		s, err := sampleCPU(p.Cmd.Process.Pid)
		if err != nil {
			return p.Exited()
		}
		before[p.Name] = s
	}
	time.Sleep(*window) // the measurement window itself
	fmt.Println("| agent | RSS | peak RSS | CPU (% of one core) |")
	fmt.Println("|---|---|---|---|")
	for _, p := range []*agentproc.Proc{server, client} {
		after, err := sampleCPU(p.Cmd.Process.Pid)
		if err != nil {
			return p.Exited()
		}
		rss, hwm, err := agentproc.Memory(p.Cmd.Process.Pid)
		if err != nil {
			return err
		}
		b := before[p.Name]
		cpu := float64(after.ticks-b.ticks) / float64(clockTicks) / after.at.Sub(b.at).Seconds() * 100
		fmt.Printf("| %s | %.1f MiB | %.1f MiB | %.2f %% |\n", p.Name, float64(rss)/1024, float64(hwm)/1024, cpu)
	}
	return nil
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
