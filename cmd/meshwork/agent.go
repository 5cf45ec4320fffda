package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/agent"
	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/internal/logstream"
	"github.com/meshwork/meshwork/internal/sdnotify"
	"github.com/meshwork/meshwork/internal/sockets"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newAgentCmd) }

// agentFlags are the command-line flags of `meshwork agent`. Each one has a
// config key of the same name in snake_case and, when given, wins over it.
type agentFlags struct {
	configs         []string
	configDirs      []string
	dataDir         string
	node            string
	bind            string
	advertise       string
	retryJoin       []string
	server          bool
	bootstrapExpect int
	dev             bool
	logLevel        string
	logJSON         bool
}

func newAgentCmd() *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the Meshwork agent",
		Long: `Run the Meshwork agent: gossip membership, the service catalog, health
checks, DNS, the local HTTP API, and on servers the Raft policy store and the CA.

SIGTERM or SIGINT leaves the cluster gracefully, then lets the connections
the tunnel carries end (tunnel.drain_timeout) before it stops; a second signal
stops at once. During "systemctl restart", whose next start inherits the
sockets from the unit's file descriptor store, SIGTERM neither leaves nor
drains for more than 500ms. "meshwork leave" does the same through the API.
SIGHUP reloads the services and their checks from the configuration. SIGUSR2
starts the binary anew with the same arguments and hands it the listening
sockets; once it serves, it becomes the unit's main process under systemd
and this agent exits (docs/restart.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.configs, "config", nil, "configuration file (YAML); repeatable, later files win")
	fl.StringArrayVar(&f.configDirs, "config-dir", nil, "directory whose *.yaml files are merged in name order; repeatable")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the agent's state (data_dir)")
	fl.StringVar(&f.node, "node", "", "node name, unique in the cluster (node; default: hostname)")
	fl.StringVar(&f.bind, "bind", "", "address for gossip, Raft and tunnels (bind; default 0.0.0.0)")
	fl.StringVar(&f.advertise, "advertise", "", "address other agents reach this one at (advertise)")
	fl.StringArrayVar(&f.retryJoin, "retry-join", nil, "agent to join, host or host:port; repeatable (retry_join)")
	fl.BoolVar(&f.server, "server", false, "run as a Raft server (server)")
	fl.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "servers to wait for before the first election: 1, 3 or 5 (bootstrap_expect)")
	fl.BoolVar(&f.dev, "dev", false, "single self-contained node on loopback, no files needed (dev)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (log_level; default info)")
	fl.BoolVar(&f.logJSON, "log-json", false, "log JSON lines (log_json)")
	return cmd
}

// load reads the configuration from the files and directories, with the flags
// that were given on top.
func (f *agentFlags) load(cmd *cobra.Command) (*config.Loaded, error) {
	changed := cmd.Flags().Changed
	return config.LoadAndValidate(f.configs, f.configDirs, func(c *config.Config) {
		if changed("data-dir") {
			c.DataDir = f.dataDir
		}
		if changed("node") {
			c.Node = f.node
		}
		if changed("bind") {
			c.Bind = f.bind
		}
		if changed("advertise") {
			c.Advertise = f.advertise
		}
		if changed("retry-join") {
			c.RetryJoin = append(c.RetryJoin, f.retryJoin...)
		}
		if changed("server") {
			c.Server = f.server
		}
		if changed("bootstrap-expect") {
			c.BootstrapExpect = f.bootstrapExpect
		}
		if changed("dev") {
			c.Dev = f.dev
		}
		if changed("log-level") {
			c.LogLevel = f.logLevel
		}
		if changed("log-json") {
			c.LogJSON = f.logJSON
		}
	})
}

func runAgent(cmd *cobra.Command, f *agentFlags) error {
	loaded, err := f.load(cmd)
	if err != nil {
		return err
	}
	cfg := &loaded.Config
	logger, logs := newLogger(cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogJSON)
	for _, w := range loaded.SecretWarnings() {
		logger.Warn("a file that holds a secret is readable by others", "problem", w)
	}

	if cfg.Dev && cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "meshwork-dev-")
		if err != nil {
			return fmt.Errorf("dev: data_dir: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}

	// The sockets systemd or a predecessor handed over (docs/restart.md).
	set, err := sockets.Inherit(logger.With("component", "sockets"))
	if err != nil {
		return err
	}
	if names := set.Inherited(); len(names) > 0 {
		from := "predecessor"
		if set.InheritedFromSystemd() {
			from = "systemd"
		}
		logger.Info("listening sockets handed over", "from", from, "count", len(names), "names", names)
	}
	up := newUpgrader(set, logger)
	tk := takeOver{set: set, log: logger}

	a, err := agent.New(cfg, agent.Deps{Logger: logger, Version: version, Commit: commit, LogStream: logs, Sockets: set})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(signals)

	if err := tk.before(ctx); err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		_ = a.Close()
		return err
	}
	resumeHeldConns(ctx, a, set, logger)
	if set.IsSuccessor() {
		// Under systemd the predecessor is the main process until it
		// names this one (MAINPID=): READY=1, the watchdog and the file
		// descriptor store are this process's from then on.
		tk.after(ctx)
	} else {
		go tk.after(ctx)
	}
	_ = sdnotify.Ready()
	_ = sdnotify.Status("running")
	watchdog := newWatchdog(logger)
	defer watchdog.stop()
	storeSync, stopStoreSync := newStoreSync()
	defer stopStoreSync()

	for stopped := false; !stopped; {
		var sig os.Signal
		select {
		case <-watchdog.tick:
			// This loop handles every signal and reload: a process
			// that freezes (SIGSTOP, a stalled runtime) or a reload
			// that hangs stops the pings, and systemd restarts it.
			_ = sdnotify.Watchdog()
			continue
		case <-storeSync:
			tk.store()
			continue
		case sig = <-signals:
		case <-a.LeaveRequested():
			// `meshwork leave`: the agent has left; stop as after SIGTERM.
			logger.Info("left the cluster through the API; stopping")
			_ = sdnotify.Stopping()
			stopPhase("draining the tunnel", cfg.Tunnel.DrainTimeout.D())
			_ = a.Drain(ctx)
			stopPhase("closing", 0)
			stopped = true
			continue
		}
		if sig == syscall.SIGHUP {
			reload(cmd, f, a, logger)
			continue
		}
		if sig == syscall.SIGUSR2 {
			// Upgrade: a new process takes the sockets over (upgrade.go).
			stopped = up.handOver(ctx, a, watchdog.tick)
			continue
		}
		tk.store() // the VIPs opened since the start, for the next start
		stopped = true
		if restartKeepsSockets(ctx, set, logger) {
			stopForRestart(ctx, a, set, logger)
			continue
		}
		logger.Info("leaving the cluster", "signal", sig.String())
		_ = sdnotify.Stopping()
		stopPhase("leaving the cluster", leaveTimeout)
		go func() {
			// A second signal during the leave stops at once.
			if s := <-signals; s != syscall.SIGHUP {
				logger.Warn("second signal, stopping without a graceful leave", "signal", s.String())
				cancel()
			}
		}()
		leaveCtx, leaveCancel := context.WithTimeout(ctx, leaveTimeout)
		if err := a.Leave(leaveCtx); err != nil && !errors.Is(err, context.Canceled) {
			logger.Warn("graceful leave failed", "err", err)
		}
		leaveCancel()
		stopPhase("draining the tunnel", cfg.Tunnel.DrainTimeout.D())
		_ = a.Drain(ctx) // the transport logs how it ended
		stopPhase("closing", 0)
	}
	// Every phase of the stop is bounded, whatever the state of the peers:
	// an agent that cannot close a component in time says which and exits.
	closeCtx, closeCancel := context.WithTimeout(ctx, closeTimeout)
	defer closeCancel()
	if err := a.Shutdown(closeCtx); err != nil {
		logger.Error("agent did not stop cleanly", "err", err)
		return err
	}
	return nil
}

// restartKeepsSockets reports whether this stop is the first half of a
// systemd restart whose next start inherits every socket from the unit's
// file descriptor store: then nothing waiting on them is refused, and the
// agent may stop at once (stopForRestart). Any doubt counts as a plain
// stop, which leaves the cluster first.
func restartKeepsSockets(ctx context.Context, set *sockets.Set, logger *slog.Logger) bool {
	if os.Getenv(sdnotify.SocketEnv) == "" || !set.HeldBySystemd() {
		return false
	}
	start := time.Now()
	restart, err := systemdRestartQueued(ctx)
	if err != nil {
		logger.Warn("cannot tell a restart from a stop; stopping as for a stop", "err", err)
		return false
	}
	logger.Info("asked systemd for the unit's job", "restart", restart, "took", time.Since(start))
	return restart
}

// stopForRestart stops the agent for a systemd restart, keeping short the
// time during which new connections wait in the sockets' queues: the next
// agent starts only once this one has exited. It does not leave the
// cluster: the next agent takes the node's place within seconds, before
// peers' failure detection declares it dead. The tunnel drains at once
// (its VIP and upstream listeners close; their sockets, held by systemd,
// queue new connections) for at most restartDrainTimeout: calls in flight
// that end within it complete, longer ones are cut. DNS and the API answer
// until the agent closes.
func stopForRestart(ctx context.Context, a *agent.Agent, set *sockets.Set, logger *slog.Logger) {
	logger.Info("systemd restarts the agent; its sockets wait in the file descriptor store for the next start", "drain", restartDrainTimeout)
	_ = sdnotify.Stopping()
	stopPhase("holding connections for the next agent", holdConnsTimeout)
	holdCtx, cancel := context.WithTimeout(ctx, holdConnsTimeout)
	held := a.HoldConns(holdCtx)
	cancel()
	if len(held) > 0 {
		n, err := set.StoreConnsInSystemd(a.HeldConnsPath(), held)
		if err != nil {
			logger.Warn("held connections not all stored in systemd's file descriptor store; the rest are reset", "stored", n, "held", len(held), "err", err)
		}
		closeHeld(held, n)
	}
	stopPhase("draining the tunnel for a restart", restartDrainTimeout)
	drainCtx, cancel := context.WithTimeout(ctx, restartDrainTimeout)
	_ = a.Drain(drainCtx) // the transport logs how it ended
	cancel()
	stopPhase("closing", 0)
}

// holdConnsTimeout bounds the hold of the connections the tunnel carries
// (transport.Transport.Hold), which every new connection waits through:
// each hold takes a round trip to its peer and the flush of what was
// read, and connections are held in parallel.
const holdConnsTimeout = time.Second

// closeHeld closes this process's copies of held connections once the
// first handed of them are with the next agent; the others are reset, as
// nobody will resume them.
func closeHeld(held []sockets.HeldConn, handed int) {
	for i, hc := range held {
		if i >= handed {
			resetSocket(hc.File)
		}
		hc.File.Close()
	}
}

// resetSocket makes the close of the last descriptor of a TCP socket
// reset the connection (SO_LINGER 0), so that its application sees a
// failure rather than an end.
func resetSocket(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
	})
}

// resumeHeldConns resumes the connections that the previous agent of this
// node held and handed over, through systemd's store or a re-exec.
func resumeHeldConns(ctx context.Context, a *agent.Agent, set *sockets.Set, logger *slog.Logger) {
	takeCtx, cancel := context.WithTimeout(ctx, claimTimeout)
	conns, err := set.TakeConns(takeCtx, a.HeldConnsPath())
	cancel()
	if err != nil {
		logger.Warn("connections handed over by the previous agent could not all be taken", "err", err)
	}
	a.ResumeConns(ctx, conns)
}

// restartDrainTimeout bounds the drain of a restart, which every new
// connection waits through: it lets short calls finish and cuts those that
// last longer, which `systemctl restart` cannot keep anyway (the next agent
// starts after this one exits). The upgrade in place (SIGUSR2) is the way
// that keeps the old agent serving while the new one starts.
const restartDrainTimeout = 500 * time.Millisecond

// The phases of a stop on SIGTERM, each bounded: the graceful leave, the
// drain (tunnel.drain_timeout, 10s by default), and closing Raft, the
// catalog and the sockets. With the defaults they add up to 25s, within the
// unit's TimeoutStopSec of 30s. The leave needs well under a second when
// the cluster is reachable; 5s is Serf's broadcast timeout, and what a node
// cut off from every peer waits before giving up.
const (
	leaveTimeout = 5 * time.Second
	closeTimeout = 10 * time.Second
)

// stopPhase tells systemd which phase of the stop the agent is in, and that
// it needs up to d, and then closeTimeout, from now on. The unit's
// TimeoutStopSec= covers the default leave and drain; the extension keeps
// systemd from killing an agent whose configured drain_timeout is longer,
// and from cutting the connections that the drain was letting end.
func stopPhase(status string, d time.Duration) {
	_ = sdnotify.Status(status)
	_ = sdnotify.ExtendTimeout(d + closeTimeout)
}

// storeSyncEvery is how often systemd's file descriptor store is made to
// follow the listeners while the agent runs: a VIP opened since the last
// sync is lost if the agent crashes before the next, and one closed since
// (its service left the catalog) queues connections that nobody accepts
// until then, where without the store they would be refused. A sync with
// nothing changed sends nothing.
const storeSyncEvery = 2 * time.Second

// newStoreSync returns the ticks of the store's sync, nil (never ready)
// outside systemd, and the function that stops them.
func newStoreSync() (<-chan time.Time, func()) {
	if os.Getenv(sdnotify.SocketEnv) == "" {
		return nil, func() {}
	}
	t := time.NewTicker(storeSyncEvery)
	return t.C, t.Stop
}

// watchdog paces the WATCHDOG=1 pings of the main loop: at half the
// unit's WatchdogSec=, as sd_watchdog_enabled(3) advises, so that one late
// tick is not a restart.
type watchdog struct {
	tick <-chan time.Time // nil, never ready, when the watchdog is off
	stop func()
}

// newWatchdog reads WatchdogSec= from the environment systemd gave the
// process. The first ping goes at once: READY=1 has just been sent.
func newWatchdog(logger *slog.Logger) watchdog {
	interval, err := sdnotify.WatchdogInterval()
	if err != nil {
		logger.Warn("systemd watchdog not used: its interval cannot be read", "err", err)
		return watchdog{stop: func() {}}
	}
	if interval <= 0 {
		return watchdog{stop: func() {}}
	}
	_ = sdnotify.Watchdog()
	t := time.NewTicker(interval / 2)
	logger.Info("systemd watchdog on", "interval", interval, "ping_every", interval/2)
	return watchdog{tick: t.C, stop: t.Stop}
}

// reload rereads the configuration on SIGHUP and applies what can change at
// run time: services and their checks. A bad configuration is logged and the
// running one kept.
func reload(cmd *cobra.Command, f *agentFlags, a *agent.Agent, logger *slog.Logger) {
	_ = sdnotify.Reloading()
	defer func() { _ = sdnotify.Ready() }()
	loaded, err := f.load(cmd)
	if err != nil {
		logger.Error("reload refused: the configuration is invalid; keeping the running one", "err", err)
		return
	}
	if err := a.Reload(&loaded.Config); err != nil {
		logger.Error("reload failed", "err", err)
		return
	}
	logger.Info("configuration reloaded", "services", len(loaded.Services))
}

// newLogger builds the process's one slog handler. Only cmd/ chooses it.
// The broker lets `meshwork monitor` follow it, at any level.
func newLogger(w io.Writer, level string, asJSON bool) (*slog.Logger, *logstream.Broker) {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated already
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if asJSON {
		h = slog.NewJSONHandler(w, opts)
	}
	tee, logs := logstream.New(h)
	return slog.New(tee), logs
}
