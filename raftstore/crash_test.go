package raftstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
)

// crashChildEnv carries a crashChild to the test binary run as a server
// process by TestCrashRestartLoop.
const crashChildEnv = "MESHWORK_CRASH_CHILD"

type crashChild struct {
	Name    string
	DataDir string
	Addr    string
	Key     []byte
	Servers map[string]string // name -> address, all three
}

// TestCrashChild is not a test: it is the server process of
// TestCrashRestartLoop, which runs this binary with crashChildEnv set and
// kills it with SIGKILL. It prints READY once started and runs until it
// is killed or its standard input closes (its parent is gone).
func TestCrashChild(t *testing.T) {
	raw := os.Getenv(crashChildEnv)
	if raw == "" {
		t.Skip("the server process of TestCrashRestartLoop")
	}
	var cc crashChild
	if err := json.Unmarshal([]byte(raw), &cc); err != nil {
		t.Fatal(err)
	}
	disc := NewStaticDiscovery()
	var infos []ServerInfo
	for name, addr := range cc.Servers {
		infos = append(infos, ServerInfo{ID: name, Addr: addr, Status: catalog.StatusAlive, Expect: 3})
	}
	disc.Set(infos)
	var ln net.Listener
	// The killed process's port is free at once, but be lenient.
	testnet.Eventually(t, 10*time.Second, "the server port", testnet.Holds(func() bool {
		var err error
		ln, err = net.Listen("tcp", cc.Addr)
		return err == nil
	}))
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("MESHWORK_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := New(Config{
		NodeName: cc.Name, DataDir: cc.DataDir, ClusterKey: cc.Key, Server: true, BootstrapExpect: 3,
		BindAddr: cc.Addr, AdvertiseAddr: cc.Addr, Timing: FastTiming,
		AutopilotInterval: 200 * time.Millisecond, StabilizationTime: time.Second, DeadServerThreshold: time.Hour,
	}, Deps{Logger: logger.With("node", cc.Name), Discovery: disc, Listener: ln})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = n.Close()
}

// crashProc is one server process of TestCrashRestartLoop.
type crashProc struct {
	cc     crashChild
	cmd    *exec.Cmd
	stdin  io.Closer // held open: EOF tells the child its parent is gone
	exited chan struct{}
	stderr *tailBuffer
}

// TestCrashRestartLoop kills server processes with SIGKILL, with writes
// in flight, and starts them again from their data dirs, in a loop: one
// server at a time, then all three at once. Every server must start every
// time, and every write acknowledged before a kill must be there after it.
func TestCrashRestartLoop(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	base := t.TempDir()
	addrs := map[string]string{}
	var procs []*crashProc
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("s%d", i)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[name] = ln.Addr().String()
		ln.Close()
		procs = append(procs, &crashProc{cc: crashChild{Name: name, DataDir: filepath.Join(base, name), Addr: addrs[name], Key: key, Servers: addrs}})
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
	})
	startAll := func(ps ...*crashProc) {
		var wg sync.WaitGroup
		errs := make([]error, len(ps))
		for i, p := range ps {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = p.start() }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("server %s did not start: %v\n%s", ps[i].cc.Name, err, ps[i].stderr)
			}
		}
	}
	startAll(procs...)

	disc := NewStaticDiscovery()
	var infos []ServerInfo
	for name, addr := range addrs {
		infos = append(infos, ServerInfo{ID: name, Addr: addr, Status: catalog.StatusAlive, Expect: 3})
	}
	disc.Set(infos)
	client, err := New(Config{NodeName: "writer", DataDir: t.TempDir(), ClusterKey: key, WatchHeartbeat: 500 * time.Millisecond},
		Deps{Logger: discardLogger(), Discovery: disc})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })

	var (
		mu    sync.Mutex
		acked = map[string]string{}
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 100000; i++ {
				key, val := fmt.Sprintf("k/%d/%d", w, i), fmt.Sprintf("v%d", i)
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := client.KVSet(wctx, key, []byte(val))
				wcancel()
				if err == nil {
					mu.Lock()
					acked[key] = val
					mu.Unlock()
				}
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()

	// verify reads the namespace as of a write made after every
	// acknowledged one, and finds each of them.
	verify := func(round string) {
		t.Helper()
		mu.Lock()
		want := make(map[string]string, len(acked))
		for k, v := range acked {
			want[k] = v
		}
		mu.Unlock()
		vctx, vcancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer vcancel()
		var idx uint64
		testnet.Eventually(t, 60*time.Second, "a write after "+round, testnet.Holds(func() bool {
			var err error
			idx, err = client.KVSet(vctx, "mark", []byte(round))
			return err == nil
		}))
		entries, _, err := client.KVWatch(vctx, "k/", idx-1)
		if err != nil {
			t.Fatalf("%s: list: %v", round, err)
		}
		got := map[string]string{}
		for _, e := range entries {
			got[e.Key] = string(e.Value)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: acknowledged write %s=%s reads %q", round, k, v, got[k])
			}
		}
		t.Logf("%s: %d acknowledged writes all present", round, len(want))
	}

	rounds := [][]int{{0}, {1}, {2}, {0, 1, 2}, {1, 2}}
	for r, kill := range rounds {
		before := count()
		testnet.Eventually(t, 60*time.Second, "writes before a kill", testnet.Holds(func() bool { return count() >= before+100 }))
		var killed []*crashProc
		for _, i := range kill {
			if !procs[i].kill() {
				t.Fatalf("server %s had exited by itself:\n%s", procs[i].cc.Name, procs[i].stderr)
			}
			killed = append(killed, procs[i])
		}
		startAll(killed...)
		verify(fmt.Sprintf("round %d (killed %v)", r+1, kill))
	}
}

// start runs the server process and waits for READY, or for it to exit.
func (p *crashProc) start() error {
	cfg, err := json.Marshal(p.cc)
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+string(cfg))
	p.stderr = &tailBuffer{max: 64 << 10}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.stdin, p.exited = cmd, stdin, make(chan struct{})
	ready := make(chan struct{})
	var lines bytes.Buffer
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
				_, _ = io.Copy(io.Discard, out)
				break
			}
			lines.WriteString(sc.Text() + "\n")
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	select {
	case <-ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("exited: %v\n%s", cmd.ProcessState, lines.String())
	case <-timeout.C:
		p.kill()
		return fmt.Errorf("not ready after 60s")
	}
}

// kill sends SIGKILL to the process, by its PID, and waits for it to
// exit. It reports false when the process had already exited by itself.
func (p *crashProc) kill() bool {
	if p.cmd == nil {
		return true
	}
	alive := true
	select {
	case <-p.exited:
		alive = false
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.stdin.Close()
	p.cmd = nil
	return alive
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	if len(b.b) > b.max {
		b.b = b.b[len(b.b)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}
