// Package sdnotify tells systemd about the agent's lifecycle through the
// sd_notify protocol: one datagram of newline-separated VAR=value
// assignments sent to the unix socket named by $NOTIFY_SOCKET.
//
// A unit with Type=notify waits for READY=1 before it counts the service as
// started; Type=notify-reload (and `systemctl reload` with ExecReload=kill
// -HUP) expects RELOADING=1 with MONOTONIC_USEC, then READY=1 once the reload
// is done. Every function is a no-op returning nil when $NOTIFY_SOCKET is
// unset, so the agent runs the same outside systemd. All functions are safe
// for concurrent use; each opens, writes and closes its own socket, and none
// blocks beyond one local datagram write.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// SocketEnv is the environment variable in which systemd passes the socket.
const SocketEnv = "NOTIFY_SOCKET"

// ErrBadSocket is returned when $NOTIFY_SOCKET is neither an absolute path
// nor an abstract socket name starting with '@'.
var ErrBadSocket = errors.New("sdnotify: NOTIFY_SOCKET is not an absolute path or @abstract name")

// Ready reports that start-up, or a reload, has finished.
func Ready() error { return Send("READY=1") }

// Stopping reports that the service has begun shutting down.
func Stopping() error { return Send("STOPPING=1") }

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

// Reloading reports that the service has begun reloading its configuration.
// It carries MONOTONIC_USEC, which systemd requires to match the message to
// the reload it asked for. Send Ready when the reload is done.
func Reloading() error {
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("sdnotify: reloading: %w", err)
	}
	return Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatUint(usec, 10))
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
	addr, err := socketAddr(path)
	if err != nil {
		return err
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sdnotify: dial %s: %w", path, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("sdnotify: write %s: %w", path, err)
	}
	return nil
}

// socketAddr turns $NOTIFY_SOCKET into a unixgram address. A leading '@'
// names a socket in the abstract namespace, which Go spells with '@' too
// (the runtime turns it into the leading NUL byte).
func socketAddr(path string) (*net.UnixAddr, error) {
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("%w: %q", ErrBadSocket, path)
	}
	return &net.UnixAddr{Name: path, Net: "unixgram"}, nil
}
