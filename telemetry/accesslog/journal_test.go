package accesslog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/transport/observe"
)

const journalSocket = "/run/systemd/journal/socket"

// inNamespaceEnv marks the copy of the test binary that TestJournal runs
// in a private mount namespace.
const inNamespaceEnv = "MESHWORK_ACCESSLOG_JOURNAL_NAMESPACE"

// TestJournal checks the journal destination against a real journald:
// the host's if it runs one, else one the test starts in a private mount
// namespace (its own tmpfs on /run), so that the host is not touched. With
// no journald at all, only the error path is tested.
func TestJournal(t *testing.T) {
	if os.Getenv(inNamespaceEnv) != "" {
		t.Skip("the copy in the namespace runs TestJournalInNamespace only")
	}
	if _, err := os.Stat(journalSocket); err == nil {
		t.Log("the host runs journald: writing to it")
		journalRoundTrip(t)
		return
	}
	t.Run("absent", testNoJournal)
	journald := findJournald()
	if journald == "" || os.Geteuid() != 0 {
		t.Skip("no journald on this host and no root to start one in a namespace: only the error path is tested")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestJournalInNamespace$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), inNamespaceEnv+"="+journald)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go makes / private in it
	out, err := cmd.CombinedOutput()
	t.Logf("in a private mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("TestJournalInNamespace: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestJournalInNamespace")) {
		t.Fatal("TestJournalInNamespace did not run")
	}
}

func testNoJournal(t *testing.T) {
	_, err := New(Config{Path: Journal, SampleRate: 1}, prometheus.NewRegistry(), nil)
	if !errors.Is(err, ErrNoJournal) || !strings.Contains(err.Error(), "telemetry.access_log.path") {
		t.Fatalf("New with no journal: %v, want ErrNoJournal naming telemetry.access_log.path", err)
	}
}

func findJournald() string {
	for _, p := range []string{"/usr/lib/systemd/systemd-journald", "/lib/systemd/systemd-journald"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// TestJournalInNamespace runs in the copy of the test binary that
// TestJournal starts in a mount namespace of its own: it mounts an empty
// /run (and /var/log/journal), checks the error path, starts journald there
// and writes to it.
func TestJournalInNamespace(t *testing.T) {
	journald := os.Getenv(inNamespaceEnv)
	if journald == "" {
		t.Skip("run by TestJournal")
	}
	for _, dir := range []string{"/run", "/var/log/journal"} {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", dir, err)
		}
	}
	t.Run("absent", testNoJournal)

	// journald says READY=1 on NOTIFY_SOCKET once its sockets listen.
	notifyPath := "/run/test-notify"
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(journald)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // if this test dies first
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() // the journald this test started, by its PID
		cmd.Wait()
		if t.Failed() {
			t.Logf("journald said: %s", stderr.String())
		}
	})
	notify.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 4096)
	for {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("waiting for journald's READY=1: %v", err)
		}
		if bytes.Contains(buf[:n], []byte("READY=1")) {
			break
		}
	}
	journalRoundTrip(t)
}

// journalRoundTrip logs calls to the journal, makes journald process them
// (journalctl --sync returns once every entry sent before it is stored),
// and reads them back with journalctl.
func journalRoundTrip(t *testing.T) {
	t.Helper()
	l, err := New(Config{Path: Journal, SampleRate: 1}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("journal-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	calls := []observe.Call{
		{Protocol: observe.HTTP, Method: "GET", Path: "/a\nb", UserAgent: "\xff\x00evil", Status: 200, GRPCStatus: -1, RequestID: id + "-1"},
		{Protocol: observe.TCP, Source: "web", Destination: "db", MeshError: "connect_failed", GRPCStatus: -1, RequestID: id + "-2"},
	}
	for i := range calls {
		l.End(&calls[i])
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(l.m.lines); n != len(calls) {
		t.Fatalf("%s = %d, want %d (write errors %d)", MetricLines, n, len(calls), count(l.m.writeErrors))
	}
	if out, err := exec.Command("journalctl", "--sync").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --sync: %v: %s", err, out)
	}
	out, err := exec.Command("journalctl", "--no-pager", "-o", "json", "-t", journalIdentifier, "-n", "1000").Output()
	if err != nil {
		t.Fatalf("journalctl: %v", err)
	}
	found := map[string]map[string]any{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var entry struct {
			Message    string `json:"MESSAGE"`
			Identifier string `json:"SYSLOG_IDENTIFIER"`
			Priority   string `json:"PRIORITY"`
		}
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			continue // an entry of someone else's, with a binary MESSAGE
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(entry.Message), &line); err != nil {
			continue
		}
		if rid, _ := line["request_id"].(string); strings.HasPrefix(rid, id) {
			if entry.Identifier != journalIdentifier || entry.Priority != "6" {
				t.Errorf("entry %s: SYSLOG_IDENTIFIER %q PRIORITY %q, want %q and 6", rid, entry.Identifier, entry.Priority, journalIdentifier)
			}
			found[rid] = line
		}
	}
	if len(found) != len(calls) {
		t.Fatalf("journal holds %d of our %d entries:\n%s", len(found), len(calls), out)
	}
	if l := found[id+"-1"]; l["path"] != "/a\nb" || l["user_agent"] != "\uFFFD\x00evil" || l["status"] != 200.0 {
		t.Errorf("entry 1 read back as %v", l)
	}
	if l := found[id+"-2"]; l["mesh_error"] != "connect_failed" || l["result"] != "failure" || l["protocol"] != "tcp" {
		t.Errorf("entry 2 read back as %v", l)
	}
}
