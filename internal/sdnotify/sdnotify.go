// Package sdnotify tells systemd about the agent's lifecycle through the
// sd_notify protocol, with github.com/coreos/go-systemd/v22/daemon: one
// datagram of newline-separated VAR=value assignments sent to the unix
// socket named by $NOTIFY_SOCKET. This package names the messages the agent
// sends and checks what systemd would misread; the protocol is daemon's.
//
// A unit with Type=notify waits for READY=1 before it counts the service as
// started; Type=notify-reload (and `systemctl reload` with ExecReload=kill
// -HUP) expects RELOADING=1 with MONOTONIC_USEC, then READY=1 once the reload
// is done. With WatchdogSec=, systemd passes the interval in $WATCHDOG_USEC
// and restarts the service when WATCHDOG=1 does not come within it
// (WatchdogInterval, Watchdog).
//
// Every function is a no-op returning nil when $NOTIFY_SOCKET is unset, so
// the agent runs the same outside systemd. All functions are safe for
// concurrent use; each opens, writes and closes its own socket, and none
// blocks beyond one local datagram write.
package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// SocketEnv is the environment variable in which systemd passes the socket.
const SocketEnv = "NOTIFY_SOCKET"

// ErrBadSocket is returned when $NOTIFY_SOCKET is neither an absolute path
// nor an abstract socket name starting with '@'.
var ErrBadSocket = errors.New("sdnotify: NOTIFY_SOCKET is not an absolute path or @abstract name")

// Ready reports that start-up, or a reload, has finished.
func Ready() error { return Send(daemon.SdNotifyReady) }

// Stopping reports that the service has begun shutting down. systemd's
// watchdog stops with it: each phase of the stop is bounded by the unit's
// TimeoutStopSec= and ExtendTimeout instead.
func Stopping() error { return Send(daemon.SdNotifyStopping) }

// Watchdog tells systemd that the service is alive. Send it at least every
// half of WatchdogInterval, from the loop whose freezing should restart the
// service.
func Watchdog() error { return Send(daemon.SdNotifyWatchdog) }

// WatchdogInterval is the unit's WatchdogSec= as systemd passed it to this
// process, or 0 when the watchdog is off or meant for another process
// ($WATCHDOG_PID). A malformed $WATCHDOG_USEC is an error.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("sdnotify: watchdog: %w", err)
	}
	return d, nil
}

// ExtendTimeout asks systemd for d more time in the phase the service is
// in: start-up, or shutting down after Stopping. systemd applies it only
// beyond the unit's own TimeoutStartSec= or TimeoutStopSec=, so it can
// lengthen a phase but never shorten one; a phase that needs more must send
// it again before d runs out.
func ExtendTimeout(d time.Duration) error {
	if d < time.Microsecond {
		return fmt.Errorf("sdnotify: extend timeout: %v is not a positive duration", d)
	}
	return Send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// MainPID tells systemd that pid is now the service's main process: the
// agent that upgrades itself in place names its successor. systemd takes
// it from the main process only (NotifyAccess=main), and only for a
// process of the service's cgroup, such as a child; from then on it takes
// notifications from pid alone, and watches pid's exit, not the sender's.
func MainPID(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("sdnotify: main pid: %d is not a process ID", pid)
	}
	return Send("MAINPID=" + strconv.Itoa(pid))
}

// Reloading reports that the service has begun reloading its configuration.
// It carries MONOTONIC_USEC, which systemd requires to match the message to
// the reload it asked for. Send Ready when the reload is done.
func Reloading() error {
	mono := strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n")
	if mono == "" {
		return errors.New("sdnotify: reloading: CLOCK_MONOTONIC cannot be read")
	}
	return Send(daemon.SdNotifyReloading, mono)
}

// Status sets the free-form status line shown by `systemctl status`.
// Newlines in msg are replaced by spaces: the protocol is line-based.
func Status(msg string) error {
	return Send("STATUS=" + strings.ReplaceAll(msg, "\n", " "))
}

// Send writes the given VAR=value assignments as one notification. It
// returns nil without doing anything when $NOTIFY_SOCKET is unset.
func Send(assignments ...string) error {
	path := os.Getenv(SocketEnv)
	if path == "" {
		return nil
	}
	// daemon dials whatever the variable holds; a relative name would be
	// looked up in the working directory, which is never what systemd meant.
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return fmt.Errorf("%w: %q", ErrBadSocket, path)
	}
	if _, err := daemon.SdNotify(false, strings.Join(assignments, "\n")+"\n"); err != nil {
		return fmt.Errorf("sdnotify: %s: %w", path, err)
	}
	return nil
}
