//go:build e2e

package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/raftstore"
)

// startRaftCluster starts three servers (bootstrap_expect 3) on h1-h3 and
// client agents on the other hosts, and waits until a client sees three
// voters with a leader.
func startRaftCluster(t *testing.T, nw *Net) []*Agent {
	t.Helper()
	enc, ck := Key(), Key()
	var agents []*Agent
	for i, h := range nw.Hosts {
		opts := AgentOptions{Encrypt: enc, ClusterKey: ck, Join: []string{nw.Hosts[0].Addr}}
		if i < 3 {
			opts.Server, opts.BootstrapExpect = true, 3
		}
		agents = append(agents, h.StartAgent(opts))
	}
	Eventually(t, 60*time.Second, "three voters and a leader", func() error {
		peers, err := raftPeers(agents[len(agents)-1])
		if err != nil {
			return err
		}
		leaders, voters := 0, 0
		for _, p := range peers {
			if p.Voter {
				voters++
			}
			if p.Leader {
				leaders++
			}
		}
		if voters != 3 || leaders != 1 {
			return fmt.Errorf("peers %+v", peers)
		}
		return nil
	})
	return agents
}

func raftPeers(a *Agent) ([]raftstore.Peer, error) {
	var peers []raftstore.Peer
	err := a.JSON(&peers, "operator", "raft", "list-peers")
	return peers, err
}

func policyStatus(a *Agent) (raftstore.PolicyStatus, error) {
	var st raftstore.PolicyStatus
	err := a.JSON(&st, "policy", "status")
	return st, err
}

// applyFile writes src to a file and applies it through agent a.
func applyFile(t *testing.T, a *Agent, src string) (raftstore.ApplyResponse, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var out raftstore.ApplyResponse
	err := a.JSON(&out, "policy", "apply", "-f", f)
	return out, err
}

// TestRaftKillLeaderWhileWriting runs three server hosts and two client
// hosts with the real binary. A client writes continuously while the leader
// is killed with SIGKILL: every acknowledged write survives, writes resume
// under a new leader, and the other client reads the policy throughout.
// Then a server cut off from the others cannot write and says why, and all
// agents at the same index hold the same policy.
func TestRaftKillLeaderWhileWriting(t *testing.T) {
	nw := New(t, 5)
	agents := startRaftCluster(t, nw)
	writer, reader := agents[3], agents[4]

	if _, err := applyFile(t, writer, "kind: ServiceDefaults\nname: web\nprotocol: http\n---\nkind: Intention\nname: web\nsources: [{name: api, action: allow}]\n"); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	Eventually(t, 30*time.Second, "reader holds web", func() error {
		_, err := reader.CLI("policy", "get", "ServiceDefaults", "web")
		return err
	})

	var (
		mu       sync.Mutex
		acked    = map[string]uint64{}
		readFail []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the writer: one document per write, bounded in count
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("svc%d", i)
			out, err := applyFile(t, writer, fmt.Sprintf("kind: ServiceDefaults\nname: %s\nprotocol: grpc\n", name))
			if err == nil {
				mu.Lock()
				acked[name] = out.Index
				mu.Unlock()
			}
		}
	}()
	go func() { // the reader: the policy stays readable on the client
		defer wg.Done()
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if out, err := reader.CLI("policy", "get", "ServiceDefaults", "web"); err != nil {
				mu.Lock()
				readFail = append(readFail, strings.TrimSpace(out))
				mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond) // pacing of the load loop
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	Eventually(t, 60*time.Second, "writes before the kill", func() error {
		if n := count(); n < 10 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	peers, err := raftPeers(reader)
	if err != nil {
		t.Fatal(err)
	}
	var leader *Agent
	for _, p := range peers {
		for _, a := range agents[:3] {
			if p.Leader && p.ID == a.Host.Name {
				leader = a
			}
		}
	}
	if leader == nil {
		t.Fatalf("no leader among %+v", peers)
	}
	before := count()
	killed := time.Now()
	leader.Proc.Signal(syscall.SIGKILL)
	if _, ok := leader.Proc.Wait(10 * time.Second); !ok {
		t.Fatal("the leader did not die")
	}
	Eventually(t, 60*time.Second, "writes after the kill", func() error {
		if n := count(); n < before+10 {
			return fmt.Errorf("%d acknowledged, %d before the kill", n, before)
		}
		return nil
	})
	t.Logf("writes resumed within %s of the kill", time.Since(killed).Round(time.Millisecond))
	close(stop)
	wg.Wait()

	if len(readFail) > 0 {
		t.Fatalf("the client could not read the policy %d times during the failover: %q", len(readFail), readFail[0])
	}

	// Every acknowledged write is on the reader once it reaches the highest
	// acknowledged index.
	var maxIdx uint64
	for _, idx := range acked {
		maxIdx = max(maxIdx, idx)
	}
	Eventually(t, 30*time.Second, "reader at the last acknowledged index", func() error {
		st, err := policyStatus(reader)
		if err != nil {
			return err
		}
		if st.Index < maxIdx {
			return fmt.Errorf("at %d, want %d", st.Index, maxIdx)
		}
		return nil
	})
	var list raftstore.PolicyList
	if err := reader.JSON(&list, "policy", "list", "ServiceDefaults"); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range list.Documents {
		have[e.Name] = true
	}
	for name, idx := range acked {
		if !have[name] {
			t.Fatalf("acknowledged write %s (index %d) is missing after the failover", name, idx)
		}
	}
	t.Logf("%d writes acknowledged, all present", len(acked))

	// The killed server comes back from its data dir and catches up.
	leader.Restart()
	Eventually(t, 60*time.Second, "restarted server caught up", func() error {
		st, err := policyStatus(leader)
		if err != nil {
			return err
		}
		if st.Index < maxIdx {
			return fmt.Errorf("at %d, want %d", st.Index, maxIdx)
		}
		return nil
	})

	// All five agents at the same index hold the same policy.
	final, err := applyFile(t, writer, "kind: IntentionDefaults\nname: default\naction: deny\n")
	if err != nil {
		t.Fatal(err)
	}
	var digest string
	for _, a := range agents {
		Eventually(t, 30*time.Second, a.Host.Name+" at the final index", func() error {
			st, err := policyStatus(a)
			if err != nil {
				return err
			}
			if st.Index != final.Index {
				return fmt.Errorf("at %d, want %d", st.Index, final.Index)
			}
			if digest == "" {
				digest = st.Digest
			} else if st.Digest != digest {
				return fmt.Errorf("digest %s differs from %s", st.Digest, digest)
			}
			return nil
		})
	}

	// A server cut off from the others cannot write, and says why; the
	// client agents keep reading.
	var cut *Agent
	peers, _ = raftPeers(reader)
	for _, p := range peers {
		for _, a := range agents[:3] {
			if !p.Leader && p.ID == a.Host.Name && cut == nil {
				cut = a
			}
		}
	}
	cut.Host.Cut()
	f := filepath.Join(t.TempDir(), "minority.yaml")
	if err := os.WriteFile(f, []byte("kind: ServiceDefaults\nname: minority\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := cut.CLI("policy", "apply", "-f", f)
	if err == nil || !strings.Contains(out, "no Raft leader") {
		t.Fatalf("write on the cut server = %v: %s; want a no-leader error", err, out)
	}
	t.Logf("the cut server refused the write: %s", strings.TrimSpace(out))
	if _, err := reader.CLI("policy", "get", "Intention", "web"); err != nil {
		t.Fatalf("client read during the partition: %v", err)
	}
	cut.Host.Mend()
	if _, err := applyFile(t, writer, "kind: ServiceDefaults\nname: after-partition\n"); err != nil {
		t.Fatalf("write after the partition healed: %v", err)
	}
	var e policy.Entry
	Eventually(t, 30*time.Second, "the mended server holds the new write", func() error {
		return cut.JSON(&e, "policy", "get", "ServiceDefaults", "after-partition")
	})
}
