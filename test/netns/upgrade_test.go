//go:build e2e

package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The re-exec upgrade without systemd (issue 29, docs/restart.md), with the
// real binary on three hosts:
//
//	h1  server (bootstrap_expect 1)
//	h2  the caller: an upstream listener for echo on 127.0.0.1:9070
//	h3  echo, a TCP echo server of the test on its loopback
//
// While the test opens a new connection through h2's upstream 200 times a
// second, each sending a line and reading it back, h2's agent and then
// h3's are upgraded in place twice each with SIGUSR2. No connection may be
// refused, and none may fail otherwise. Four long-lived connections
// exchange a line every 50 ms throughout: each must outlive every upgrade.
const (
	echoPort       = 7070
	echoUpstream   = "127.0.0.1:9070"
	upgradeRate    = 200               // new connections a second
	upgradeMaxLoad = 120 * upgradeRate // bounds the load (2 minutes at upgradeRate)
	upgradeBetween = upgradeRate       // successful exchanges before and after each upgrade
	exchangeBound  = 10 * time.Second  // bounds one connection's exchange
	handoffBound   = 90 * time.Second  // bounds one upgrade
	upgradePolicy  = "kind: IntentionDefaults\nname: default\naction: allow\n"
	successorLine  = `upgrade: the successor serves; draining.* pid=(\d+)`
)

// exchange is one connection of the load: when it started, how long the
// connect and the echo took, and how it failed.
type exchange struct {
	start time.Time
	took  time.Duration
	err   error
}

// echoLoad opens connections through an upstream at a steady rate.
type echoLoad struct {
	mu   sync.Mutex
	done []exchange
	ok   int
	stop chan struct{}
	wg   sync.WaitGroup
}

func startEchoLoad(h *Host, addr string) *echoLoad {
	l := &echoLoad{stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Second / upgradeRate)
		defer tick.Stop()
		for i := 0; i < upgradeMaxLoad; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				ex := echoOnce(h, addr, i)
				l.mu.Lock()
				l.done = append(l.done, ex)
				if ex.err == nil {
					l.ok++
				}
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

// echoOnce connects to addr from h, sends a line and reads it back.
func echoOnce(h *Host, addr string, i int) exchange {
	ex := exchange{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), exchangeBound)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		ex.err, ex.took = err, time.Since(ex.start)
		return ex
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(exchangeBound))
	line := fmt.Sprintf("exchange %d\n", i)
	if _, err := io.WriteString(c, line); err != nil {
		ex.err, ex.took = err, time.Since(ex.start)
		return ex
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(c, got); err != nil {
		ex.err = err
	} else if string(got) != line {
		ex.err = fmt.Errorf("echo answered %q to %q", got, line)
	}
	ex.took = time.Since(ex.start)
	return ex
}

// longLived is a connection held open through the upgrades, exchanging a
// numbered line every 50 ms: a byte lost, repeated or cut fails it.
type longLived struct {
	mu        sync.Mutex
	exchanges int
	err       error
	stop      chan struct{}
	done      chan struct{}
}

func startLongLived(t *testing.T, h *Host, addr string) *longLived {
	t.Helper()
	c, err := h.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l := &longLived{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer c.Close()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		// Bounded: 10 minutes of exchanges at most.
		for i := 0; i < 12_000; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			c.SetDeadline(time.Now().Add(exchangeBound))
			line := fmt.Sprintf("long %d\n", i)
			got := make([]byte, len(line))
			_, err := io.WriteString(c, line)
			if err == nil {
				_, err = io.ReadFull(c, got)
			}
			if err == nil && string(got) != line {
				err = fmt.Errorf("echo answered %q to %q", got, line)
			}
			l.mu.Lock()
			if err != nil {
				l.err = fmt.Errorf("exchange %d at %s: %w", i, time.Now().Format("15:04:05.000"), err)
			} else {
				l.exchanges++
			}
			l.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return l
}

// finish stops l and returns how many exchanges it made and its error.
func (l *longLived) finish() (int, error) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exchanges, l.err
}

// successes is how many exchanges succeeded so far.
func (l *echoLoad) successes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok
}

// waitFor waits until n more exchanges than now have succeeded.
func (l *echoLoad) waitFor(t *testing.T, n int, what string) {
	t.Helper()
	want := l.successes() + n
	Eventually(t, 60*time.Second, fmt.Sprintf("%d successful exchanges %s", n, what), func() error {
		if got := l.successes(); got < want {
			return fmt.Errorf("%d of %d", got, want)
		}
		return nil
	})
}

func (l *echoLoad) finish() []exchange {
	close(l.stop)
	l.wg.Wait()
	return l.done
}

// serveEcho runs a TCP echo server on h's loopback at port until the test
// ends.
func serveEcho(t *testing.T, h *Host, port int) {
	t.Helper()
	ln, err := h.Listen(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", port))
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
				io.Copy(c, c)
			}()
		}
	}()
}

// upgradeInPlace sends SIGUSR2 to the agent process pid, whose output goes
// to logPath, waits until its successor serves and it has exited, and
// returns the successor's pid.
func upgradeInPlace(t *testing.T, logPath string, pid int) int {
	t.Helper()
	before := successorPIDs(t, logPath)
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatalf("SIGUSR2 to %d: %v", pid, err)
	}
	var next int
	Eventually(t, handoffBound, fmt.Sprintf("a successor of agent %d that serves", pid), func() error {
		pids := successorPIDs(t, logPath)
		if len(pids) == len(before) {
			return errors.New("no successor yet")
		}
		next = pids[len(pids)-1]
		return nil
	})
	t.Cleanup(func() { _ = syscall.Kill(next, syscall.SIGKILL) })
	Eventually(t, handoffBound, fmt.Sprintf("agent %d to exit after its handoff", pid), func() error {
		if running(pid) {
			return errors.New("still running")
		}
		return nil
	})
	return next
}

// successorPIDs lists the successors an agent's log says serve, in order.
func successorPIDs(t *testing.T, logPath string) []int {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, m := range regexp.MustCompile(successorLine).FindAllSubmatch(b, -1) {
		pid, err := strconv.Atoi(string(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// running reports whether pid is a process that has not exited (a zombie
// has).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestUpgradeInPlaceRefusesNothing(t *testing.T) {
	nw := New(t, 3)
	h1, h2, h3 := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2]
	serveEcho(t, h3, echoPort)

	enc, ck := Key(), Key()
	server := h1.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Server: true, BootstrapExpect: 1})
	Eventually(t, 90*time.Second, "the CA on h1", func() error {
		_, err := server.CLI("ca", "roots")
		return err
	})
	services := map[*Host]string{
		h2: fmt.Sprintf("services:\n  - name: caller\n    id: caller\n    upstreams:\n      - {service: echo, local_bind: %q}\n", echoUpstream),
		h3: fmt.Sprintf("services:\n  - {name: echo, id: echo, port: %d}\n", echoPort),
	}
	agents := []*Agent{server}
	for _, h := range []*Host{h2, h3} {
		tok, err := server.Token(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, h.StartAgent(AgentOptions{Encrypt: enc, ClusterKey: ck, Join: []string{h1.Addr}, Token: tok, Extra: services[h]}))
	}
	waitForLeaves(t, agents[1:], map[*Host][]string{h2: {"caller"}, h3: {"echo"}})
	waitForInstances(t, agents[1], map[string]int{"echo": 1})
	applyPolicy(t, agents[1], agents, upgradePolicy)
	Eventually(t, 30*time.Second, "an exchange through h2's upstream", func() error {
		return echoOnce(h2, echoUpstream, 0).err
	})

	load := startEchoLoad(h2, echoUpstream)
	var long []*longLived
	for range 4 {
		long = append(long, startLongLived(t, h2, echoUpstream))
	}
	load.waitFor(t, upgradeBetween, "before the first upgrade")
	var upgrades []string
	for _, a := range agents[1:] {
		pid := a.Proc.Cmd.Process.Pid
		for range 2 {
			start := time.Now()
			pid = upgradeInPlace(t, a.Proc.Log, pid)
			upgrades = append(upgrades, fmt.Sprintf("%s at %s (successor %d)", a.Host.Name, start.Format("15:04:05.000"), pid))
			load.waitFor(t, upgradeBetween, "after upgrading "+a.Host.Name)
		}
	}
	done := load.finish()
	// Every long-lived connection outlived every upgrade: each agent held
	// it for its successor (docs/restart.md, "Connections carried over").
	for i, l := range long {
		n, err := l.finish()
		t.Logf("long-lived connection %d: %d exchanges, error %v", i, n, err)
		if err != nil {
			t.Errorf("long-lived connection %d did not survive the upgrades: %v", i, err)
		}
	}

	var refused, failed []exchange
	var longest time.Duration
	for _, ex := range done {
		longest = max(longest, ex.took)
		switch {
		case errors.Is(ex.err, syscall.ECONNREFUSED):
			refused = append(refused, ex)
		case ex.err != nil:
			failed = append(failed, ex)
		}
	}
	t.Logf("%d connections over %d upgrades (%s); longest exchange %s; %d refused; %d failed otherwise",
		len(done), len(upgrades), strings.Join(upgrades, ", "), longest.Round(time.Millisecond), len(refused), len(failed))
	// The failures by the second they started in, and the first few.
	bySecond := map[string]int{}
	for _, ex := range slices.Concat(refused, failed) {
		bySecond[ex.start.Format("15:04:05")]++
	}
	t.Logf("failed connections by the second they started in: %v", bySecond)
	for _, ex := range slices.Concat(refused, failed)[:min(5, len(refused)+len(failed))] {
		t.Logf("  at %s after %s: %v", ex.start.Format("15:04:05.000"), ex.took.Round(time.Millisecond), ex.err)
	}
	if len(refused) > 0 {
		t.Errorf("%d of %d connections were refused during the upgrades", len(refused), len(done))
	}
	var ne net.Error
	for _, ex := range failed {
		if errors.As(ex.err, &ne) && ne.Timeout() {
			t.Errorf("a connection at %s waited %s and timed out: an upgrade left it hanging", ex.start.Format("15:04:05.000"), exchangeBound)
			break
		}
	}
	// The old agent drains its calls in flight before its tunnel stops,
	// and the new one's first gossip record carries its services: no
	// call is cut and no caller loses the instance.
	if len(failed) > 0 {
		t.Errorf("%d of %d connections failed during the upgrades (first at %s: %v)", len(failed), len(done), failed[0].start.Format("15:04:05.000"), failed[0].err)
	}
}
