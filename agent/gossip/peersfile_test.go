package gossip

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
)

func samplePeers() []RememberedPeer {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	return []RememberedPeer{
		{Name: "server-1", Addr: "10.0.0.1", Port: 7946, Server: true, Status: catalog.StatusAlive, Since: at},
		{Name: "client-1", Addr: "fd00::2", Port: 8301, Status: catalog.StatusLeft, Since: at.Add(-time.Minute)},
		{Name: "client-2", Addr: "10.0.0.3", Port: 7946, Status: catalog.StatusFailed, Since: at.Add(-time.Hour)},
	}
}

func TestParsePeersFile(t *testing.T) {
	good := string(encodePeersFile("self", samplePeers()))
	withPeer := func(entry string) string {
		return `{"format":"meshwork-gossip-peers/1","node":"self","peers":[` + entry + `]}`
	}
	tests := []struct {
		name    string
		file    string
		want    string // "" = valid
		foreign bool
	}{
		{"as written", good, "", false},
		{"no peers", `{"format":"meshwork-gossip-peers/1","node":"self","peers":[]}`, "", false},
		{"empty", ``, "not a peers file", false},
		{"truncated", good[:len(good)/2], "not a peers file", false},
		{"not JSON", "\x00\x01binary", "not a peers file", false},
		{"trailing data", good + "{}", "data after the document", false},
		{"unknown field", `{"format":"meshwork-gossip-peers/1","node":"self","peers":[],"extra":1}`, "unknown field", false},
		{"other format", `{"format":"meshwork-gossip-peers/9","node":"self","peers":[]}`, `format "meshwork-gossip-peers/9"`, true},
		{"keyring file", `["c2VjcmV0LWtleS0xMjM0NTY3ODkwMTIzNDU2Nzg5MDE="]`, "not a peers file", false},
		{"another node's", strings.Replace(good, `"node": "self"`, `"node": "web-7"`, 1), `written by node "web-7"`, true},
		{"bad name", withPeer(`{"name":"a b","addr":"10.0.0.1","port":7946,"status":"alive","since":"2026-12-01T12:00:00Z"}`), `peers[0]: name: node name "a b"`, false},
		{"this node", withPeer(`{"name":"self","addr":"10.0.0.1","port":7946,"status":"alive","since":"2026-12-01T12:00:00Z"}`), "is this node", false},
		{"twice", withPeer(`{"name":"a","addr":"10.0.0.1","port":7946,"status":"alive","since":"2026-12-01T12:00:00Z"},{"name":"a","addr":"10.0.0.2","port":7946,"status":"alive","since":"2026-12-01T12:00:00Z"}`), `peers[1]: "a" is listed twice`, false},
		{"host name", withPeer(`{"name":"a","addr":"db.example","port":7946,"status":"alive","since":"2026-12-01T12:00:00Z"}`), `addr "db.example" is not an IP address`, false},
		{"port 0", withPeer(`{"name":"a","addr":"10.0.0.1","port":0,"status":"alive","since":"2026-12-01T12:00:00Z"}`), "port 0 is out of range", false},
		{"status", withPeer(`{"name":"a","addr":"10.0.0.1","port":7946,"status":"suspect","since":"2026-12-01T12:00:00Z"}`), `status "suspect"`, false},
		{"no since", withPeer(`{"name":"a","addr":"10.0.0.1","port":7946,"status":"alive"}`), "since is missing", false},
		{"too many", withPeer(strings.TrimSuffix(strings.Repeat(`{"name":"a","addr":"10.0.0.1","port":7946,"status":"alive","since":"2026-12-01T12:00:00Z"},`, maxRememberedPeers+1), ",")), "over the limit of 64", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := parsePeersFile([]byte(tc.file), "self")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				if tc.name == "as written" && (len(ps) != 3 || ps[1] != samplePeers()[1] || !ps[0].Since.Equal(samplePeers()[0].Since)) {
					t.Fatalf("read back %+v, want %+v", ps, samplePeers())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parse = %v, want an error naming %q", err, tc.want)
			}
			if errors.Is(err, ErrForeignPeersFile) != tc.foreign {
				t.Fatalf("parse = %v: foreign %v, want %v", err, errors.Is(err, ErrForeignPeersFile), tc.foreign)
			}
		})
	}
}

func TestReadPeersFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadPeersFile(filepath.Join(dir, "none.json"), "self"); !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrPeersFile) {
		t.Fatalf("missing file = %v, want ErrPeersFile wrapping os.ErrNotExist", err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, make([]byte, maxPeersFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPeersFile(big, "self"); !errors.Is(err, ErrPeersFile) || !strings.Contains(err.Error(), "larger than 65536 bytes") {
		t.Fatalf("oversized file = %v, want ErrPeersFile naming the limit", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPeersFile(bad, "self"); !errors.Is(err, ErrPeersFile) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("corrupt file = %v, want ErrPeersFile naming the path", err)
	}
}

// TestCorruptPeersFileIsIgnored starts a member whose peers file is
// garbage: it starts all the same, says so, and replaces the file with one
// of its own, mode 0600.
func TestCorruptPeersFileIsIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip", "peers.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("\x7fELF garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg := FastTestConfig("self")
	cfg.PeersFile = path
	g, err := New(cfg, Deps{Store: catalog.NewStore(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		t.Fatalf("start with a corrupt peers file: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "gossip peers file ignored") || !strings.Contains(logs.String(), "not a peers file") {
		t.Fatalf("the corrupt file was not reported:\n%s", logs.String())
	}
	if _, err := ReadPeersFile(path, "self"); err != nil {
		t.Fatalf("the file was not replaced by a valid one: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("peers file mode %v, %v; want 0600", st.Mode(), err)
	}
}

func FuzzParsePeersFile(f *testing.F) {
	f.Add(encodePeersFile("self", samplePeers()))
	f.Add(encodePeersFile("self", nil))
	f.Add([]byte(`{"format":"meshwork-gossip-peers/1","node":"self","peers":[{"name":"a","addr":"10.0.0.1","port":7946,"status":"alive","since":"2026-12-01T12:00:00Z"}]}`))
	f.Add([]byte(`{"format":"meshwork-gossip-peers/1","node":"other","peers":null}`))
	f.Add([]byte(`{"peers":[{"since":"0001-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parsePeersFile(b, "self")
		if err != nil {
			return
		}
		// What parses is safe to use: valid names, addresses and ports, and
		// it survives a round trip.
		pt := newPeerTable("self", testTimeouts)
		pt.remember(ps, time.Unix(1e9, 0))
		if len(pt.peers) != len(ps) {
			t.Fatalf("%d peers parsed, %d remembered", len(ps), len(pt.peers))
		}
		back, err := parsePeersFile(encodePeersFile("self", ps), "self")
		if err != nil || len(back) != len(ps) {
			t.Fatalf("round trip: %d peers, %v; want %d", len(back), err, len(ps))
		}
	})
}

// syncBuffer is a strings.Builder safe for the concurrent writes of a
// logger.
type syncBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}
