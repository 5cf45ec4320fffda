package l7clients

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// InteropCases are the grpc-go interop cases that a mesh carrying gRPC must
// pass, in the order the gRPC interop test descriptions list them. None
// needs credentials or a cloud.
var InteropCases = []string{
	"empty_unary",
	"large_unary",
	"client_streaming",
	"server_streaming",
	"ping_pong",
	"cancel_after_begin",
	"timeout_on_sleeping_server",
	"status_code_and_message",
	"custom_metadata",
	"special_status_message",
	"unimplemented_method",
}

// ErrInteropFailed is returned by RunInteropCase for a case the client did
// not report done.
var ErrInteropFailed = errors.New("interop case failed")

// interopStartTimeout bounds how long the server may take to listen.
const interopStartTimeout = 15 * time.Second

// grpcInfoLogs makes grpc-go log at info level: the server then says where
// it listens, and the client says "... done" when a case passes.
var grpcInfoLogs = []string{"GRPC_GO_LOG_SEVERITY_LEVEL=info", "GRPC_GO_LOG_VERBOSITY_LEVEL=0"}

// listeningRE matches the server's "interop server listening on [::]:PORT".
var listeningRE = regexp.MustCompile(`interop server listening on (\S+)`)

// InteropServer is grpc-go's interop server in plaintext (h2c), as a child
// process. It binds the wildcard address (the binary offers no choice);
// tests reach it on loopback only.
type InteropServer struct {
	// Port is the TCP port it listens on.
	Port int
	// PID is its process id.
	PID int

	log *tailBuffer
}

// StartInteropServer starts the interop server on a port the kernel picks
// and returns once it listens. It is stopped by its PID at t's cleanup.
func StartInteropServer(t testing.TB) *InteropServer {
	t.Helper()
	path := Tool(t, ToolInteropServer)
	cmd := command(context.Background(), path, "--port=0", "--use_tls=false")
	cmd.Env = append(os.Environ(), grpcInfoLogs...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("l7clients: start %s: %v", ToolInteropServer, err)
	}
	s := &InteropServer{PID: cmd.Process.Pid, log: &tailBuffer{max: 64 << 10}}
	exited := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill() // by its PID; nothing else is signalled
		<-exited
	})

	ready := make(chan int, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			s.log.WriteLine(line)
			if !found {
				if port, ok := parseListening(line); ok {
					found = true
					ready <- port
				}
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	select {
	case s.Port = <-ready:
		return s
	case <-exited:
		t.Fatalf("l7clients: %s exited before listening:\n%s", ToolInteropServer, s.Log())
	case <-time.After(interopStartTimeout):
		t.Fatalf("l7clients: %s not listening after %v:\n%s", ToolInteropServer, interopStartTimeout, s.Log())
	}
	return nil
}

// parseListening returns the port of the server's listening line.
func parseListening(line string) (int, bool) {
	m := listeningRE.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	_, p, err := net.SplitHostPort(m[1])
	if err != nil {
		return 0, false
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return 0, false
	}
	return port, true
}

// Log returns the end of the server's log, for a failing test's message.
func (s *InteropServer) Log() string { return s.log.String() }

// RunInteropCase runs one interop case of grpc-go's client in plaintext
// against host:port and returns the client's log. It fails with
// ErrInteropFailed, and the log, unless the client exits 0 having said the
// case is done.
func RunInteropCase(ctx context.Context, host string, port int, testCase string) (string, error) {
	path, err := LookTool(ToolInteropClient)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := command(ctx, path,
		"--server_host="+host,
		"--server_port="+strconv.Itoa(port),
		"--test_case="+testCase,
		"--use_tls=false")
	cmd.Env = append(os.Environ(), grpcInfoLogs...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	log := out.String()
	switch {
	case err != nil:
		return log, fmt.Errorf("l7clients: interop %s against %s: %w: %v", testCase, net.JoinHostPort(host, strconv.Itoa(port)), ErrInteropFailed, err)
	case !reportsDone(log):
		return log, fmt.Errorf("l7clients: interop %s against %s: %w: exited 0 without reporting done", testCase, net.JoinHostPort(host, strconv.Itoa(port)), ErrInteropFailed)
	}
	return log, nil
}

// reportsDone says whether the client logged a case as done ("EmptyUnaryCall
// done"), which it does only once every check of the case held.
func reportsDone(log string) bool {
	for line := range strings.Lines(log) {
		if strings.HasSuffix(strings.TrimSpace(line), " done") {
			return true
		}
	}
	return false
}

// tailBuffer keeps the last max bytes of lines written to it. Safe for
// concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) WriteLine(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, line...)
	b.buf = append(b.buf, '\n')
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
