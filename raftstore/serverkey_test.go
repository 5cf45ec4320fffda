package raftstore

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/keytls"
	"github.com/meshwork/meshwork/internal/testnet"
)

// TestServerKeyImpostor: an agent holds the cluster key, and mints a leaf
// from it under a server's name. With a server key on the servers, it is
// not a server: it cannot write the internal namespace, gets no private
// state in a backup, and cannot speak Raft, while the servers still can.
// Without a server key, the same agent passes for that server: the limit
// the server key closes.
func TestServerKeyImpostor(t *testing.T) {
	for _, withKey := range []bool{true, false} {
		t.Run(fmt.Sprintf("server key %v", withKey), func(t *testing.T) {
			var logs lockedBuffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			c := MakeTestCluster(t, 3, TestOptions{ServerKey: withKey, Logger: logger, Configure: func(c *Config) {
				c.PrivateKV = []string{"sealed/"}
				if !withKey {
					c.ServerKey = nil // whatever MESHWORK_TEST_SERVER_KEY says
				}
			}})
			ctx := ctxT(t, 60*time.Second)
			for _, s := range c.Servers() {
				s.Node.SetACLResolver(newResolver(t, s.Node.ACL()))
			}
			leader := c.Leader()
			_, mgmt, err := acl.Bootstrap(ctx, leader.Node.ACL(), time.Now(), 0)
			if err != nil {
				t.Fatal(err)
			}
			asMgmt := acl.WithSecret(ctx, mgmt)
			mustSet(t, leader.Node, "sealed/ca-key", "sealed-1")
			var follower *TestNode
			for _, s := range c.Servers() {
				if s != leader {
					follower = s
				}
			}

			// The impostor: an agent with the cluster key only, named
			// after a server.
			imp, err := New(Config{NodeName: follower.Name, DataDir: t.TempDir(), ClusterKey: c.Key},
				Deps{Discovery: c.Disc, Dial: c.net.dialer("impostor")})
			if err != nil {
				t.Fatal(err)
			}
			if err := imp.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { imp.Close() })

			_, err = imp.KVCAS(asMgmt, "ca/tokens/abc", []byte("erased"), 0)
			if withKey && !errors.Is(err, ErrForbidden) {
				t.Fatalf("an internal key written by a cluster-key leaf named %s: %v, want ErrForbidden", follower.Name, err)
			}
			if !withKey && err != nil {
				t.Fatalf("without a server key, the impostor passes for %s, yet its write failed: %v", follower.Name, err)
			}
			// The leader says so, naming whom the impostor poses as.
			posing := "presents no server certificate"
			if got := logs.String(); withKey != (strings.Contains(got, posing) && strings.Contains(got, "caller="+follower.Name)) {
				t.Fatalf("with a server key %v, the leader's warnings: %q", withKey, got)
			}
			// Servers without a key say at start what they cannot tell.
			if got := strings.Count(logs.String(), "cannot tell a server from any agent"); withKey && got != 0 || !withKey && got != 3 {
				t.Fatalf("with a server key %v, %d servers warned at start", withKey, got)
			}
			var buf bytes.Buffer
			if err := imp.SaveSnapshot(asMgmt, &buf); err != nil {
				t.Fatalf("a backup through the impostor, with the management token: %v", err)
			}
			h, st, err := readBackup(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if got := kvOf(st)["sealed/ca-key"]; withKey && (h.Private != backupPrivateOmitted || got != "") {
				t.Fatalf("the impostor's backup: private %q, sealed key %q; want it left out", h.Private, got)
			} else if !withKey && h.Private != backupPrivateIncluded {
				t.Fatalf("without a server key, the impostor's backup leaves out the private state: %q", h.Private)
			}

			// The servers are still servers, over RPC too: a follower
			// forwards an internal write and gets the private state.
			if _, err := follower.Node.KVCAS(ctx, "ca/tokens/def", []byte("used"), 0); err != nil {
				t.Fatalf("an internal key written by follower %s: %v", follower.Name, err)
			}
			if h, st, err := readBackup(saveBackup(t, follower.Node)); err != nil || h.Private != backupPrivateIncluded || kvOf(st)["sealed/ca-key"] != "sealed-1" {
				t.Fatalf("a backup through follower %s: %+v, %v; want the private state", follower.Name, h, err)
			}

			// Raft's own traffic: a cluster-key leaf named after a
			// server, and, for control, a leaf of the server authority.
			impostor := impostorRaftTLS(t, c.Key, nil, follower.Name)
			for _, s := range c.Servers() {
				resp, err := raftCall(c, s.Addr, impostor)
				if withKey && err == nil {
					t.Fatalf("%s answered the Raft call of a cluster-key leaf named %s: term %d", s.Name, follower.Name, resp.Term)
				}
				if !withKey && err != nil {
					t.Fatalf("without a server key, %s refused the impostor's Raft call: %v", s.Name, err)
				}
				if withKey {
					if resp, err := raftCall(c, s.Addr, impostorRaftTLS(t, c.Key, c.ServerKey, follower.Name)); err != nil || resp.Term == 0 {
						t.Fatalf("%s did not answer a server leaf's Raft call: %+v, %v", s.Name, resp, err)
					}
				}
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer that logs from many goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// impostorRaftTLS is the Raft client config of one who holds key (and
// serverKey, when given) and trusts whatever a server presents: only the
// server's own check can refuse it.
func impostorRaftTLS(t *testing.T, key, serverKey []byte, name string) *tls.Config {
	t.Helper()
	a, err := keytls.New(keytls.Config{Key: key, ServerKey: serverKey, NodeName: name})
	if err != nil {
		t.Fatal(err)
	}
	cfg := a.PeerClientConfig(ALPNRaft)
	cfg.VerifyPeerCertificate = nil
	return cfg
}

// raftCall sends the server at addr an AppendEntries of term 0 over Raft's
// own transport, with cfg. Its term is below the server's, so the server
// changes nothing and answers with its term; err is the connection's
// failure when it does not answer.
func raftCall(c *TestCluster, addr string, cfg *tls.Config) (*raft.AppendEntriesResponse, error) {
	stream := &streamLayer{chanListener: newChanListener(tcpAddr("127.0.0.1:1")), dial: c.net.dialer("impostor"), tlsCfg: cfg}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 1, Timeout: 10 * time.Second, Logger: newHCLog(discardLogger())})
	defer trans.Close()
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("impostor"), Addr: []byte("127.0.0.1:1")}}
	var resp raft.AppendEntriesResponse
	err := trans.AppendEntries("target", raft.ServerAddress(addr), req, &resp)
	return &resp, err
}

// TestServerKeyRollingRestart adds a server key to the servers of a running
// cluster one at a time, as docs/operations.md says. A server restarted
// with the key speaks Raft only with those that have it, so it sits out
// until they are a majority; the cluster stays writable through every
// server at every step, loses no write, and ends whole, with the key.
func TestServerKeyRollingRestart(t *testing.T) {
	c := MakeTestCluster(t, 3, TestOptions{Configure: func(c *Config) { c.ServerKey = nil }})
	serverKey := make([]byte, 32)
	_, _ = rand.Read(serverKey)
	ctx := ctxT(t, 3*time.Minute)
	var written []string
	writeThroughEach := func(step string) {
		t.Helper()
		for _, s := range c.Servers() {
			key := fmt.Sprintf("roll/%s/%s", step, s.Name)
			if _, err := s.Node.KVSet(ctx, key, []byte(step)); err != nil {
				t.Fatalf("%s: a write through %s: %v", step, s.Name, err)
			}
			written = append(written, key)
		}
	}
	// sitsOut checks that the server on the minority side of the key
	// missed a write of this step: Raft refused it.
	sitsOut := func(out *TestNode, key string) {
		t.Helper()
		if _, _, err := out.Node.KVGet(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s, on the other side of the server key, holds %s: %v", out.Name, key, err)
		}
	}
	writeThroughEach("before")
	for i, s := range c.Servers() {
		c.Kill(i)
		s.Config.ServerKey = serverKey
		c.Restart(i)
		step := "after-" + s.Name
		writeThroughEach(step)
		switch i {
		case 0: // s1 has the key, alone
			sitsOut(c.Server(0), "roll/"+step+"/s2")
		case 1: // s1 and s2 have it: s3 is alone
			sitsOut(c.Server(2), "roll/"+step+"/s1")
		}
	}

	// Whole again: one leader that every server follows, every write on
	// every server, and only server leaves speak Raft.
	leader := c.Leader()
	want := leader.Node.fsm.state().kvIndex
	for _, s := range c.Servers() {
		if !s.Node.TLS().HasServerKey() {
			t.Fatalf("%s runs without the server key", s.Name)
		}
		testnet.Eventually(t, 30*time.Second, s.Name+" applies every write", testnet.Holds(func() bool { return s.Node.fsm.state().kvIndex >= want }))
		for _, key := range written {
			if _, _, err := s.Node.KVGet(ctx, key); err != nil {
				t.Fatalf("%s lost %s: %v", s.Name, key, err)
			}
		}
		if _, err := raftCall(c, s.Addr, impostorRaftTLS(t, c.Key, nil, leader.Name)); err == nil {
			t.Fatalf("%s answered a cluster-key leaf's Raft call after the roll", s.Name)
		}
	}
	if peers, err := leader.Node.Peers(ctx); err != nil || len(peers) != 3 {
		t.Fatalf("peers after the roll: %v, %v", peers, err)
	}
}
