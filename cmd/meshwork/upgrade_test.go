package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/transport"
)

// upgradeAgent is a `meshwork agent` process started for an upgrade test,
// without NOTIFY_SOCKET (SIGUSR2 is for agents outside systemd). Its log
// goes to a file, which its successor inherits and writes to as well.
type upgradeAgent struct {
	cmd     *exec.Cmd
	exited  chan error
	logPath string
	apiAddr string
}

func startUpgradeAgent(t *testing.T, bin string, args ...string) *upgradeAgent {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, append([]string{"agent"}, args...)...)
	cmd.Env = withoutNotifySocket(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &upgradeAgent{cmd: cmd, exited: make(chan error, 1), logPath: logPath}
	go func() { a.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-a.exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log:\n%s", b)
		}
	})
	return a
}

func withoutNotifySocket(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			out = append(out, kv)
		}
	}
	return out
}

// successorPID reads the successor's pid from the predecessor's log.
func (a *upgradeAgent) successorPID() (int, error) {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`the successor serves; draining.* pid=(\d+)`).FindSubmatch(b)
	if m == nil {
		return 0, errors.New("no successor in the log")
	}
	return strconv.Atoi(string(m[1]))
}

// echoBackend answers every connection with "hello\n".
func echoBackend(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "hello\n")
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// loadResult counts a client loop's outcomes.
type loadResult struct {
	mu      sync.Mutex
	ok      int
	refused int
	other   []string
}

func (r *loadResult) add(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil:
		r.ok++
	case errors.Is(err, syscall.ECONNREFUSED):
		r.refused++
	default:
		if len(r.other) < 20 {
			r.other = append(r.other, err.Error())
		}
	}
}

func (r *loadResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%d ok, %d refused, %d other errors %q", r.ok, r.refused, len(r.other), r.other)
}

// TestAgentUpgradeProcess upgrades a running `meshwork agent` with SIGUSR2:
// the real binary re-executes itself and hands over its sockets. Clients
// that open a new connection for every request, to the API and to a
// service on another agent through the upgraded agent's upstream listener,
// see no refused connection before, during and after the handoff; the old
// process exits with status 0 and the new one serves.
func TestAgentUpgradeProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := meshworkBinary(t)
	backend := echoBackend(t)
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	// Two hosts on loopback: the server s runs web; the client c, which is
	// upgraded, runs app, whose upstream calls web on s.
	sIP, ip := loopbackAddr(), loopbackAddr()
	common := "cluster_key: %q\nnode: %s\nbind: %s\nadvertise: %s\naddresses: {http: %s, dns: %s}\n" +
		"tunnel: {vip_range: 127.251.0.0/16, drain_timeout: 5s, default_policy: allow}\n"
	sConf := filepath.Join(t.TempDir(), "s.yaml")
	writeConf(t, sConf, fmt.Sprintf(common, key, "s", sIP, sIP, sIP, sIP)+
		fmt.Sprintf("server: true\nbootstrap_expect: 1\nservices:\n- {name: web, address: 127.0.0.1, port: %d}\n", backend))
	startUpgradeAgent(t, bin, "--config", sConf, "--data-dir", filepath.Join(t.TempDir(), "data"))
	var token []byte
	testnet.Eventually(t, time.Minute, "a bootstrap token for c", func() error {
		out, err := exec.Command(bin, "ca", "token", "c", "--http-addr", sIP+":8500").Output()
		token = out
		return err
	})
	tokenFile := filepath.Join(t.TempDir(), "c.token")
	writeConf(t, tokenFile, string(token))
	cConf := filepath.Join(t.TempDir(), "c.yaml")
	writeConf(t, cConf, fmt.Sprintf(common, key, "c", ip, ip, ip, ip)+
		fmt.Sprintf("retry_join: [%s]\nca: {token_file: %s}\n", sIP, tokenFile)+
		fmt.Sprintf("services:\n- {name: app, port: 1, upstreams: [{service: web, local_bind: \"%s:9191\"}]}\n", ip))
	old := startUpgradeAgent(t, bin, "--config", cConf, "--data-dir", filepath.Join(t.TempDir(), "data"))
	apiAddr := ip + ":8500"
	client := api.NewClient(apiAddr)
	ctx := context.Background()

	// The test calls web through app's upstream listener, which the same
	// code as a VIP's opens and hands over.
	var vipAddr string
	testnet.Eventually(t, time.Minute, "the upstream listener of web", func() error {
		var st transport.Status
		if _, err := client.Do(ctx, http.MethodGet, transport.StatusPath, nil, nil, &st); err != nil {
			return err
		}
		for _, l := range st.Listeners {
			if l.Kind == "upstream" && l.Service == "web" {
				vipAddr = l.Addr
				return nil
			}
		}
		return errors.New("no upstream listener for web yet")
	})
	testnet.Eventually(t, time.Minute, "web to answer through the upstream listener", func() error { return callVIP(vipAddr) })

	// Clients: a new connection for every request, bounded in count and
	// time; they stop once the successor has answered for a while.
	httpc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	var apiRes, vipRes loadResult
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	deadline := time.Now().Add(2 * time.Minute)
	go func() {
		defer wg.Done()
		for i := 0; i < 200_000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := httpc.Get("http://" + apiAddr + "/v1/agent/self")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			apiRes.add(err)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 200_000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			vipRes.add(callVIP(vipAddr))
		}
	}()

	if err := old.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-old.exited:
		old.exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("the old agent exited with %v after the handoff, want status 0", err)
		}
	case <-time.After(2 * time.Minute):
		close(stop)
		wg.Wait()
		t.Fatal("the old agent did not exit after SIGUSR2")
	}
	pid, err := old.successorPID()
	if err != nil {
		t.Fatal(err)
	}
	succ, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Started by the agent this test started; its parent is gone, so
		// it is ended by its pid.
		_ = succ.Kill()
	})

	// The old agent is gone: whatever answers now is the successor.
	apiRes.mu.Lock()
	before := apiRes.ok
	apiRes.mu.Unlock()
	testnet.Eventually(t, time.Minute, "the successor to answer", func() error {
		apiRes.mu.Lock()
		defer apiRes.mu.Unlock()
		if apiRes.ok < before+50 {
			return errors.New("fewer than 50 answers since the old agent exited")
		}
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("API: %s", &apiRes)
	t.Logf("upstream: %s", &vipRes)
	// No connection is refused: the sockets never close. Requests can still
	// fail for reasons this test reports but does not hold against the
	// handoff yet (docs/restart.md, "What is not done"): the old agent's
	// tunnel stops when the successor starts its own, which cuts the calls
	// it carries; the successor routes only once gossip has brought the
	// catalog back, as no snapshot is carried over; and net/http drops a
	// request it reads after its Shutdown began.
	if apiRes.refused != 0 {
		t.Errorf("API across the handoff: %s; want no refused connection", &apiRes)
	}
	if vipRes.refused != 0 {
		t.Errorf("upstream across the handoff: %s; want no refused connection", &vipRes)
	}
	if vipRes.ok == 0 {
		t.Error("no call through the upstream listener succeeded")
	}
	testnet.Eventually(t, time.Minute, "web through the successor's upstream listener", func() error { return callVIP(vipAddr) })
	if _, err := client.Self(ctx); err != nil {
		t.Errorf("the successor's API: %v", err)
	}
}

// callVIP makes one call to the echo backend through its VIP.
func callVIP(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if line != "hello\n" {
		return fmt.Errorf("got %q", line)
	}
	return nil
}
