package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/meshwork/meshwork/agent"
	"github.com/meshwork/meshwork/internal/sdnotify"
	"github.com/meshwork/meshwork/internal/sockets"
)

// The bounds of a handoff to a successor (docs/restart.md). A successor
// that loads its configuration in prepareTimeout and serves in
// readyTimeout takes over; otherwise it is killed and this agent serves on,
// so that a broken new binary costs nothing but a log line. claimTimeout is
// how long a successor waits to take over every listener of its
// predecessor, such as a VIP whose service gossip has not yet brought back,
// before it says it is ready anyway.
const (
	prepareTimeout = 30 * time.Second
	readyTimeout   = time.Minute
	claimTimeout   = 30 * time.Second
	// handoverTimeout bounds the wait for the predecessor's last message,
	// which it sends right after this one said it is ready.
	handoverTimeout = 10 * time.Second
	// handoffDrainTimeout bounds the drain before the tunnel stops, which
	// every new connection waits through: calls of a few milliseconds
	// end within it, long-lived ones are cut at its end.
	handoffDrainTimeout = 200 * time.Millisecond
)

// upgrader re-executes the agent on SIGUSR2, handing its sockets to the new
// process: `meshwork agent` upgrades itself after its binary was replaced,
// with no refused connection. Under systemd (`systemctl kill
// --kill-whom=main --signal=SIGUSR2 meshwork`) the successor, a child in
// the unit's cgroup, becomes the service's main process: this agent names
// it with MAINPID= once it serves, and it then sends READY=1, pings the
// watchdog and stores the sockets.
type upgrader struct {
	exe  string   // the binary's path, resolved at start
	args []string // the arguments the agent was started with
	set  *sockets.Set
	log  *slog.Logger
}

// newUpgrader resolves the binary's path now: once the package manager
// replaced it, /proc/self/exe names the deleted file, and the path is what
// holds the new one.
func newUpgrader(set *sockets.Set, logger *slog.Logger) *upgrader {
	exe, err := os.Executable()
	if err != nil {
		logger.Warn("the binary's path is unknown; SIGUSR2 cannot upgrade the agent", "err", err)
	}
	return &upgrader{exe: exe, args: os.Args[1:], set: set, log: logger}
}

// handOver starts the successor and, once it serves, stops this agent from
// accepting (agent/handoff.go gives the order). It returns true when the
// caller should close the agent and exit, false when the agent serves on
// (the upgrade failed and was logged).
//
// Until the successor is the main process this agent answers systemd's
// watchdog on each tick of ping (nil outside systemd): the handoff blocks
// the main loop for up to prepareTimeout and readyTimeout.
func (u *upgrader) handOver(ctx context.Context, a *agent.Agent, ping <-chan time.Time) bool {
	start := time.Now()
	stopPings := pingDuring(ping)
	defer stopPings()
	if err := u.check(); err != nil {
		u.log.Error("upgrade refused", "err", err)
		return false
	}
	u.log.Info("upgrade: starting the successor", "exe", u.exe)
	cmd := exec.Command(u.exe, u.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	prepCtx, cancel := context.WithTimeout(ctx, prepareTimeout)
	succ, err := u.set.StartSuccessor(prepCtx, cmd)
	cancel()
	if err != nil {
		u.log.Error("upgrade failed; this agent serves on", "err", err)
		return false
	}
	// From here the successor holds the sockets too; the tunnel, gossip
	// and Raft are its once this agent lets go of them. New connections to
	// the VIPs wait in the kernel's queue until the successor accepts.
	// The connections the tunnel carries are held and sent to the
	// successor, which resumes them. What cannot be held gets a short
	// drain: peers' new streams are refused as shutting_down (their
	// agents wait for the successor), and the tunnel stops when the calls
	// end or the drain's bound passes.
	var held []sockets.HeldConn
	if succ.TakesConns() {
		holdCtx, cancel := context.WithTimeout(ctx, holdConnsTimeout)
		held = a.HoldConns(holdCtx)
		cancel()
	} else {
		u.log.Warn("upgrade: the successor does not take connections (an older binary?); those carried drain and are cut")
	}
	if len(held) > 0 {
		n, err := succ.SendConns(held)
		if err != nil {
			u.log.Warn("upgrade: held connections not all sent to the successor; the rest are reset", "sent", n, "held", len(held), "err", err)
		}
		closeHeld(held, n)
	}
	drainCtx, cancel := context.WithTimeout(ctx, handoffDrainTimeout)
	_ = a.Drain(drainCtx) // the transport logs how it ended
	cancel()
	if err := a.ReleaseExclusive(); err != nil {
		u.log.Warn("upgrade: the tunnel, gossip or Raft did not stop cleanly", "err", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	err = succ.Start(readyCtx)
	cancel()
	if err != nil {
		// The tunnel, gossip and Raft are stopped: this agent keeps DNS and
		// the API going, and needs a restart.
		u.log.Error("upgrade failed after the tunnel, gossip and Raft were handed over; this agent serves DNS and the API only: restart it", "err", err)
		return false
	}
	pid := succ.Process().Pid
	_ = succ.Process().Release()
	// systemd takes MAINPID= from the main process, this one; from now on
	// it takes notifications from the successor alone, and this process's
	// exit does not stop the service.
	stopPings()
	if err := sdnotify.MainPID(pid); err != nil {
		u.log.Error("upgrade: systemd was not told the new main process; the service stops when this agent exits", "pid", pid, "err", err)
	}
	if err := succ.Handover(); err != nil {
		u.log.Warn("upgrade: the successor was not told it is the main process", "pid", pid, "err", err)
	}
	u.log.Info("upgrade: the successor serves; draining", "pid", pid, "took", time.Since(start))
	// The tunnel and its VIP listeners stopped with gossip and Raft; the
	// API and DNS stop taking new work now. The API's requests in flight
	// are answered while the agent closes.
	if err := a.StopAccepting(); err != nil {
		u.log.Warn("upgrade: the API or DNS did not stop cleanly", "err", err)
	}
	return true
}

// pingDuring sends WATCHDOG=1 on each tick until the returned function is
// called; the function may be called more than once.
func pingDuring(tick <-chan time.Time) (stop func()) {
	if tick == nil {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-tick:
				_ = sdnotify.Watchdog()
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-exited
		})
	}
}

// check says whether a re-exec can work here.
func (u *upgrader) check() error {
	if u.exe == "" {
		return errors.New("upgrade: the binary's path is unknown")
	}
	if _, err := os.Stat(u.exe); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	return nil
}

// takeOver is the successor's side, around the agent's start: before Start
// it waits until its predecessor released gossip and Raft; after Start it
// waits (up to claimTimeout) until it serves every socket it inherited,
// closes those it no longer needs, tells its predecessor that it is ready,
// and hands the sockets to systemd's store when systemd runs it. In an
// agent that no predecessor started, before returns at once.
type takeOver struct {
	set *sockets.Set
	log *slog.Logger
}

func (t takeOver) before(ctx context.Context) error {
	if !t.set.IsSuccessor() {
		return nil
	}
	t.log.Info("upgrade: prepared; waiting for the predecessor to release gossip and Raft")
	return t.set.AwaitStart(ctx)
}

func (t takeOver) after(ctx context.Context) {
	if left := t.set.Inherited(); len(left) > 0 {
		select {
		case <-t.set.AllClaimed():
		case <-time.After(claimTimeout):
		case <-ctx.Done():
		}
	}
	if released := t.set.ReleaseUnclaimed(); len(released) > 0 {
		t.log.Info("inherited sockets no longer served were closed", "names", released)
	}
	if err := t.set.SignalReady(); err != nil {
		t.log.Warn("upgrade: the predecessor was not told that this agent is ready", "err", err)
	}
	handoverCtx, cancel := context.WithTimeout(ctx, handoverTimeout)
	err := t.set.AwaitHandover(handoverCtx)
	cancel()
	if err != nil {
		t.log.Warn("upgrade: the predecessor did not hand over; under systemd this agent is not the main process", "err", err)
	}
	t.store()
}

// store hands the open sockets to systemd's file descriptor store, so that
// the next start under systemd inherits them.
func (t takeOver) store() {
	if err := t.set.StoreInSystemd(); err != nil && !errors.Is(err, sockets.ErrNoNotifySocket) {
		t.log.Warn("sockets not stored in systemd's file descriptor store; a restart will refuse connections", "err", err)
	}
}
