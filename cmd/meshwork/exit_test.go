package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
)

// runBinary runs the built binary with args and env added to the
// process's, and returns its combined output and exit status.
func runBinary(t *testing.T, bin string, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%v: %v", args, err)
	return "", -1
}

// TestExitCodes runs the binary against a real agent API on loopback:
// 0 for success, 1 for an error from the agent or a failed request, 2 for
// a wrong command line (nothing sent), each with a message that says what.
func TestExitCodes(t *testing.T) {
	bin := meshworkBinary(t)
	a := startTestAgent(t)
	closed := closedAddr(t)
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want []string
	}{
		{"success", nil, []string{"members", "--http-addr", a.addr}, 0, []string{"NODE", "n1"}},
		{"success with --timeout", nil, []string{"members", "--http-addr", a.addr, "--timeout", "5s"}, 0, []string{"n1"}},
		{"agent error", nil, []string{"services", "deregister", "nope", "--http-addr", a.addr}, 1, []string{`service "nope" is not registered`, "HTTP 404"}},
		{"unreachable", nil, []string{"members", "--http-addr", closed}, 1, []string{"cannot reach the agent", "connection refused"}},
		{"unknown subcommand", nil, []string{"catalog", "servcies"}, 2, []string{`unknown command "servcies" for "meshwork catalog"`, `did you mean "services"?`, "meshwork catalog --help"}},
		{"unknown nested subcommand", nil, []string{"operator", "raft", "list-peer"}, 2, []string{`did you mean "list-peers"?`}},
		{"unknown top-level command", nil, []string{"memebrs"}, 2, []string{`did you mean "members"?`}},
		{"missing subcommand", nil, []string{"catalog"}, 2, []string{"meshwork catalog needs a subcommand", "services"}},
		{"unknown flag", nil, []string{"members", "--detialed"}, 2, []string{"unknown flag: --detialed"}},
		{"missing argument", nil, []string{"catalog", "service"}, 2, []string{"meshwork catalog service", "accepts 1 arg"}},
		{"extra argument", nil, []string{"members", "extra"}, 2, []string{"unknown command \"extra\""}},
		{"bad --format", nil, []string{"members", "--format", "yaml"}, 2, []string{`--format "yaml"`}},
		{"bad --timeout", nil, []string{"members", "--timeout", "0s"}, 2, []string{"--timeout 0s: want a positive duration"}},
		{"bad timeout env", []string{api.TimeoutEnv + "=soon"}, []string{"members", "--http-addr", a.addr}, 2, []string{"$MESHWORK_HTTP_TIMEOUT \"soon\""}},
		{"help documents the codes", nil, []string{"--help"}, 0, []string{"Exit status:", "2  usage error", "MESHWORK_HTTP_TIMEOUT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runBinary(t, bin, tc.env, tc.args...)
			if code != tc.code {
				t.Errorf("exit status %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}

// hungAgent is a TCP listener that accepts connections and never answers,
// as a wedged agent would.
func hungAgent(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestHungAgentIsAbandoned checks that a command against an agent that
// takes the connection and never answers gives up after --timeout (or
// $MESHWORK_HTTP_TIMEOUT), exits 1, and says that the agent did not answer
// within that time.
func TestHungAgentIsAbandoned(t *testing.T) {
	bin := meshworkBinary(t)
	addr := hungAgent(t)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag", nil, []string{"members", "--http-addr", addr, "--timeout", "300ms"}, "within 300ms"},
		{"env", []string{api.TimeoutEnv + "=400ms"}, []string{"catalog", "nodes", "--http-addr", addr}, "within 400ms"},
		{"write", nil, []string{"services", "deregister", "web", "--http-addr", addr, "--timeout", "300ms"}, "within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runBinary(t, bin, tc.env, tc.args...)
			if code != exitFailed {
				t.Errorf("exit status %d, want %d; output:\n%s", code, exitFailed, out)
			}
			for _, w := range []string{"the agent did not answer in time", "http://" + addr, tc.want, "--timeout"} {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
		})
	}

	// In process, the error is ErrTimeout.
	_, err := run(t, "", "members", "--http-addr", addr, "--timeout", "200ms")
	if !errors.Is(err, api.ErrTimeout) || exitCode(err) != exitFailed {
		t.Fatalf("error %v (exit %d), want ErrTimeout and exit 1", err, exitCode(err))
	}
}
