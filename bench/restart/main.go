// Command restart measures how long a new connection waits while the agent
// hands its sockets to a successor (SIGUSR2, docs/restart.md): one dev agent
// on loopback runs web (an echo backend of this program) and app, whose
// upstream listener calls web through the tunnel. Two clients open a new
// connection for every request, one to the API and one to the upstream
// listener, while the agent is upgraded -handoffs times in a row. It prints
// the wait of the connections opened during the handoffs (from connect to
// the first byte of the answer): p50, p99 and max, the max of each handoff,
// the same outside handoffs for comparison, and every failure by kind.
//
//	go build -o bin/meshwork ./cmd/meshwork
//	go run ./bench/restart -bin bin/meshwork -handoffs 20
//
// Issue 29's target: p99 ≤ 300 ms.
//
// With -catalog N it measures instead how soon a restarted agent answers
// DNS for a remote service, with the catalog it saved at its stop and
// without, N starts of each (catalog.go):
//
//	go run ./bench/restart -bin bin/meshwork -catalog 20
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin/meshwork", "meshwork binary")
	handoffs := flag.Int("handoffs", 20, "upgrades in a row")
	ip := flag.String("ip", "127.61.0.1", "loopback address of the agent")
	settle := flag.Duration("settle", time.Second, "time after each handoff before the next, counted as part of it")
	catalogRounds := flag.Int("catalog", 0, "instead of handoffs: restarts of a client agent with its saved catalog and without, this many of each")
	farIP := flag.String("catalog-server-ip", "127.61.0.2", "with -catalog: loopback address of the server agent")
	downLimit := flag.Duration("catalog-down-limit", 5*time.Second, "with -catalog: how long a start without the saved catalog, its server down, is given to answer")
	flag.Parse()
	if *catalogRounds > 0 {
		if err := catalogRun(*bin, *farIP, *ip, *catalogRounds, *downLimit); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*bin, *ip, *handoffs, *settle); err != nil {
		log.Fatal(err)
	}
}

// sample is one request on a new connection.
type sample struct {
	start time.Time
	wait  time.Duration
	err   error
}

type client struct {
	name string
	do   func() error
	mu   sync.Mutex
	all  []sample
}

func (c *client) loop(stop <-chan struct{}, deadline time.Time) {
	for i := 0; i < 5_000_000 && time.Now().Before(deadline); i++ {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		err := c.do()
		c.mu.Lock()
		c.all = append(c.all, sample{start: start, wait: time.Since(start), err: err})
		c.mu.Unlock()
	}
}

// window is one handoff: from SIGUSR2 to the old agent's exit plus settle.
type window struct{ from, to time.Time }

func run(bin, ip string, handoffs int, settle time.Duration) (err error) {
	bin, err = filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-restart-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(dir)
		}
	}()
	backend, err := echoBackend()
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(
		"dev: true\nnode: bench\nbind: %s\naddresses: {http: %s, dns: %s}\nlog_level: info\n"+
			"tunnel: {vip_range: 127.252.0.0/16, drain_timeout: 5s}\n"+
			"services:\n- {name: web, address: 127.0.0.1, port: %d}\n"+
			"- {name: app, port: 1, upstreams: [{service: web, local_bind: \"%s:9191\"}]}\n",
		ip, ip, ip, backend, ip)), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "agent", "--config", conf, "--data-dir", filepath.Join(dir, "data"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	first := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reaps the first agent; successors are reparented
	pid := first
	defer func() { _ = syscall.Kill(pid, syscall.SIGKILL) }()

	apiURL := "http://" + ip + ":8500/v1/agent/self"
	httpc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	apiCall := func() error {
		resp, err := httpc.Get(apiURL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	upstream := ip + ":9191"
	upCall := func() error { return callEcho(upstream) }
	if err := waitUntil(time.Minute, func() error {
		if err := apiCall(); err != nil {
			return err
		}
		return upCall()
	}); err != nil {
		return fmt.Errorf("agent not serving: %w (log: %s)", err, logPath)
	}

	clients := []*client{{name: "api", do: apiCall}, {name: "upstream", do: upCall}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Duration(handoffs)*(settle+30*time.Second) + time.Minute)
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.loop(stop, deadline) }()
	}
	time.Sleep(settle) // a baseline before the first handoff

	var windows []window
	seen := 0
	for i := range handoffs {
		w := window{from: time.Now()}
		if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
			close(stop)
			return fmt.Errorf("handoff %d: %w", i, err)
		}
		var next int
		if err := waitUntil(time.Minute, func() error {
			var err error
			next, err = successorPID(logPath, seen)
			return err
		}); err != nil {
			close(stop)
			return fmt.Errorf("handoff %d: %w (log: %s)", i, err, logPath)
		}
		seen++
		if err := waitUntil(time.Minute, func() error {
			if alive(pid) {
				return errors.New("old agent still running")
			}
			return nil
		}); err != nil {
			close(stop)
			return fmt.Errorf("handoff %d: %w", i, err)
		}
		pid = next
		time.Sleep(settle) // the successor serves a while before the next handoff
		w.to = time.Now()
		windows = append(windows, w)
	}
	close(stop)
	wg.Wait()

	fmt.Printf("%d handoffs, settle %s; wait = connect to first byte of the answer, new connection per request\n", handoffs, settle)
	for _, c := range clients {
		report(c, windows)
	}
	return nil
}

func report(c *client, windows []window) {
	var in, out []time.Duration
	perHandoff := make([]time.Duration, len(windows))
	failures := map[string]int{}
	for _, s := range c.all {
		if s.err != nil {
			failures[failureKind(s.err)]++
		}
		idx := -1
		for i, w := range windows {
			if !s.start.Before(w.from) && s.start.Before(w.to) {
				idx = i
				break
			}
		}
		if idx < 0 {
			out = append(out, s.wait)
			continue
		}
		in = append(in, s.wait)
		perHandoff[idx] = max(perHandoff[idx], s.wait)
	}
	fmt.Printf("\n%s: %d requests, %d during handoffs\n", c.name, len(c.all), len(in))
	fmt.Printf("  during handoffs:  p50 %s  p99 %s  max %s\n", pct(in, 0.50), pct(in, 0.99), pct(in, 1))
	fmt.Printf("  outside:          p50 %s  p99 %s  max %s\n", pct(out, 0.50), pct(out, 0.99), pct(out, 1))
	fmt.Printf("  longest wait per handoff: p50 %s  p99 %s  max %s\n", pct(perHandoff, 0.50), pct(perHandoff, 0.99), pct(perHandoff, 1))
	if len(failures) == 0 {
		fmt.Println("  failures: none")
		return
	}
	kinds := make([]string, 0, len(failures))
	for k := range failures {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Printf("  failures: %d %s\n", failures[k], k)
	}
}

func failureKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed without an answer (EOF)"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other: " + err.Error()
}

func pct(ds []time.Duration, q float64) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i].Round(10 * time.Microsecond).String()
}

// successorPID is the pid of the n-th successor (0-based) that the log
// says serves.
func successorPID(logPath string, n int) (int, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0, err
	}
	ms := regexp.MustCompile(`the successor serves; draining.* pid=(\d+)`).FindAllSubmatch(b, -1)
	if len(ms) <= n {
		return 0, errors.New("no successor yet")
	}
	return strconv.Atoi(string(ms[n][1]))
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitUntil(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func echoBackend() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "hello\n")
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func callEcho(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "hello\n" {
		return fmt.Errorf("got %q", line)
	}
	return nil
}
