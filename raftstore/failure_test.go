package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/policy"
)

// TestKillLeaderLosesNoAcknowledgedWrite writes continuously through a
// client agent, kills the leader in the middle, and checks that every write
// that was acknowledged is in the new leader's state.
func TestKillLeaderLosesNoAcknowledgedWrite(t *testing.T) {
	c := MakeTestCluster(t, 3)
	client := c.AddClient("writer")
	old := c.Leader()

	type ack struct {
		key   string
		index uint64
	}
	var (
		mu    sync.Mutex
		acked []ack
		fails int
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				key := fmt.Sprintf("w%d/%d", w, i)
				wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
				idx, err := client.Node.KVSet(wctx, key, []byte(key))
				wcancel()
				mu.Lock()
				if err == nil {
					acked = append(acked, ack{key, idx})
				} else {
					fails++
				}
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	testnet.Eventually(t, 30*time.Second, "writes before the kill", testnet.Holds(func() bool { return count() >= 50 }))
	c.Kill(c.Index(old))
	before := count()
	newLeader := c.Leader()
	if newLeader == old {
		t.Fatal("the killed server is still the leader")
	}
	testnet.Eventually(t, 30*time.Second, "writes after the failover", testnet.Holds(func() bool { return count() >= before+50 }))
	cancel()
	wg.Wait()

	rctx := ctxT(t, 30*time.Second)
	if err := newLeader.Node.srv.barrier(); err != nil {
		t.Fatalf("barrier on the new leader: %v", err)
	}
	st := newLeader.Node.fsm.state()
	mu.Lock()
	defer mu.Unlock()
	for _, a := range acked {
		e, ok := st.kvGet(a.key)
		if !ok {
			t.Fatalf("acknowledged write %s (index %d) is missing after the failover", a.key, a.index)
		}
		if string(e.Value) != a.key || e.ModifyIndex != a.index {
			t.Fatalf("acknowledged write %s: got %q at %d, acknowledged at %d", a.key, e.Value, e.ModifyIndex, a.index)
		}
	}
	// The restarted old leader catches up with all of it too.
	c.Restart(c.Index(old))
	n := c.Server(c.Index(old)).Node
	testnet.Eventually(t, 30*time.Second, "old leader catching up", testnet.Holds(func() bool { return n.fsm.state().kvIndex >= st.kvIndex }))
	for _, a := range acked {
		if _, ok := n.fsm.state().kvGet(a.key); !ok {
			t.Fatalf("restarted server lacks %s", a.key)
		}
	}
	_ = rctx
	t.Logf("%d writes acknowledged, %d failed during the failover", len(acked), fails)
}

// TestMinorityCannotWrite partitions one server away: it cannot write and
// says there is no leader; the majority goes on. On TCP and on the network
// twin, whose partition cuts the Raft streams themselves.
func TestMinorityCannotWrite(t *testing.T) {
	for name, network := range map[string]TestNetwork{"tcp": NetTCP, "twin": NetTwin} {
		t.Run(name, func(t *testing.T) { testMinorityCannotWrite(t, network) })
	}
}

func testMinorityCannotWrite(t *testing.T, network TestNetwork) {
	c := MakeTestCluster(t, 3, TestOptions{Network: network})
	leader := c.Leader()
	li := c.Index(leader)
	// Isolate the leader: it is the minority.
	others := []int{}
	for i := range c.Servers() {
		if i != li {
			others = append(others, i)
		}
	}
	c.Partition([]int{li}, others)
	testnet.Eventually(t, 30*time.Second, "old leader stepping down", testnet.Holds(func() bool { return leader.Node.srv.raft.State() != raft.Leader }))

	// The minority server only knows servers it cannot reach.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := ApplyDoc(ctx, leader.Node, "kind: ServiceDefaults\nname: web\nprotocol: http\n")
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("write on the minority = %v, want ErrNoLeader", err)
	}
	if !strings.Contains(err.Error(), "no Raft leader") || !strings.Contains(err.Error(), "apply") {
		t.Fatalf("error %q does not say why", err)
	}
	// The majority elects a leader and writes.
	newLeader := c.Leader()
	if newLeader == leader {
		t.Fatal("the isolated server is leader")
	}
	wctx := ctxT(t, 20*time.Second)
	if _, err := ApplyDoc(wctx, newLeader.Node, "kind: ServiceDefaults\nname: web\nprotocol: http\n"); err != nil {
		t.Fatalf("majority write: %v", err)
	}
	// After healing, the old leader holds the majority's write.
	c.Heal()
	testnet.Eventually(t, 30*time.Second, "healed server catching up", testnet.Holds(func() bool {
		return leader.Node.Policy().ProtocolFor("web") == policy.ProtocolHTTP
	}))
}

// TestRestartAllKeepsData restarts every server from disk.
func TestRestartAllKeepsData(t *testing.T) {
	c := MakeTestCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	leader := c.Leader()
	var last uint64
	for i := 0; i < 20; i++ {
		idx, err := ApplyDoc(ctx, leader.Node, fmt.Sprintf("kind: ServiceDefaults\nname: svc%d\nprotocol: http\n", i))
		if err != nil {
			t.Fatal(err)
		}
		last = idx
	}
	// Force a snapshot on one server so both paths (snapshot + log) are used.
	if err := c.Server(0).Node.srv.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Node.KVSet(ctx, "after-snapshot", []byte("x")); err != nil {
		t.Fatal(err)
	}
	want := leader.Node.fsm.Policy().Digest()
	for i := range c.Servers() {
		c.Kill(i)
	}
	for i := range c.Servers() {
		c.Restart(i)
	}
	nl := c.Leader()
	if err := nl.Node.srv.barrier(); err != nil {
		t.Fatal(err)
	}
	if got := nl.Node.fsm.Policy(); got.Digest() != want || got.Len() != 20 || got.Index() != last {
		t.Fatalf("after restart: %d docs at %d, want 20 at %d", got.Len(), got.Index(), last)
	}
	if _, _, err := nl.Node.KVGet(ctx, "after-snapshot"); err != nil {
		t.Fatalf("KV after restart: %v", err)
	}
}

// TestSnapshotRestore saves a backup, damages the state, restores it on the
// same cluster and on a fresh one, and refuses damaged backups.
func TestSnapshotRestore(t *testing.T) {
	c := MakeTestCluster(t, 3)
	client := c.AddClient("c1")
	ctx := ctxT(t, 60*time.Second)
	if _, err := ApplyDoc(ctx, client.Node, "kind: ServiceDefaults\nname: web\nprotocol: http\n---\nkind: Split\nname: web\nsplits: [{weight: 100, subset: {tags: [v1]}}]\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Node.KVSet(ctx, "ca/roots", []byte("root")); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if err := client.Node.SaveSnapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	want := c.Leader().Node.fsm.Policy()

	// Change things after the backup.
	if _, err := client.Node.DeleteDocument(ctx, policy.Key{Kind: policy.KindServiceDefaults, Name: "web"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ApplyDoc(ctx, client.Node, "kind: ServiceDefaults\nname: extra\n"); err != nil {
		t.Fatal(err)
	}
	before := client.Node.Policy().Index()

	// Damaged backups are refused and change nothing.
	bad := append([]byte(nil), backup.Bytes()...)
	bad[len(bad)/2] ^= 0xff
	for name, b := range map[string][]byte{"flipped byte": bad, "truncated": backup.Bytes()[:backup.Len()/2], "not a backup": []byte("hello")} {
		if _, err := client.Node.RestoreSnapshot(ctx, bytes.NewReader(b)); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("%s: restore = %v, want ErrBadSnapshot", name, err)
		}
	}
	if _, ok := c.Leader().Node.fsm.Policy().Get(policy.KindServiceDefaults, "extra"); !ok {
		t.Fatal("a refused restore changed the state")
	}

	// Restore on the same cluster: the agents see it as a newer index.
	idx, err := client.Node.RestoreSnapshot(ctx, bytes.NewReader(backup.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if idx <= before {
		t.Fatalf("restore index %d is not above %d", idx, before)
	}
	s, err := client.Node.Replica().Wait(ctx, idx-1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(policy.KindServiceDefaults, "extra"); ok || s.ProtocolFor("web") != policy.ProtocolHTTP || s.SplitFor("web") == nil {
		t.Fatalf("client after restore holds %v", s.List(""))
	}
	for _, srv := range c.Servers() {
		n := srv.Node
		testnet.Eventually(t, 20*time.Second, srv.Name+" restored", testnet.Holds(func() bool { return n.fsm.state().policyIndex >= idx }))
		if _, ok := n.fsm.Policy().Get(policy.KindServiceDefaults, "extra"); ok {
			t.Fatalf("%s still holds a document deleted by the restore", srv.Name)
		}
	}

	// Restore onto a fresh cluster.
	fresh := MakeTestCluster(t, 3)
	fc := fresh.AddClient("fc")
	if _, err := fc.Node.RestoreSnapshot(ctx, bytes.NewReader(backup.Bytes())); err != nil {
		t.Fatalf("restore on a fresh cluster: %v", err)
	}
	got, err := fc.Node.ConsistentPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.List("")) != len(want.List("")) || got.SplitFor("web") == nil {
		t.Fatalf("fresh cluster holds %d docs, want %d", got.Len(), want.Len())
	}
	if v, _, err := fresh.Leader().Node.KVGet(ctx, "ca/roots"); err != nil || string(v) != "root" {
		t.Fatalf("KV on the fresh cluster = %q, %v", v, err)
	}
}

// TestAgentsAtSameIndexAgree checks that agents holding the same index hold
// the same policy, byte for byte.
func TestAgentsAtSameIndexAgree(t *testing.T) {
	c := MakeTestCluster(t, 3)
	a := c.AddClient("a")
	b := c.AddClient("b")
	ctx := ctxT(t, 30*time.Second)
	var last uint64
	for i := 0; i < 10; i++ {
		idx, err := ApplyDoc(ctx, a.Node, fmt.Sprintf("kind: Intention\nname: svc%d\nsources: [{name: api, action: allow}]\n", i))
		if err != nil {
			t.Fatal(err)
		}
		last = idx
	}
	sa, err := a.Node.Replica().Wait(ctx, last-1)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Node.Replica().Wait(ctx, last-1)
	if err != nil {
		t.Fatal(err)
	}
	if sa.Index() != sb.Index() || sa.Digest() != sb.Digest() {
		t.Fatalf("agents disagree: %d %s vs %d %s", sa.Index(), sa.Digest(), sb.Index(), sb.Digest())
	}
	for _, s := range c.Servers() {
		if d := s.Node.Policy(); d.Index() == sa.Index() && d.Digest() != sa.Digest() {
			t.Fatalf("server %s disagrees at index %d", s.Name, d.Index())
		}
	}
}

// TestClientKeepsPolicyWhenServersDown restarts a client agent while every
// server is down: it still enforces the last policy and reports staleness.
func TestClientKeepsPolicyWhenServersDown(t *testing.T) {
	c := MakeTestCluster(t, 3)
	cl := c.AddClient("c1")
	ctx := ctxT(t, 30*time.Second)
	idx, err := ApplyDoc(ctx, cl.Node, "kind: Intention\nname: web\nsources: [{name: api, action: allow}]\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Node.Replica().Wait(ctx, idx-1); err != nil {
		t.Fatal(err)
	}
	for i := range c.Servers() {
		c.Kill(i)
	}
	c.StopClient(cl)
	c.StartClient(cl)
	s := cl.Node.Policy()
	if s.Index() != idx {
		t.Fatalf("restarted client holds index %d, want %d", s.Index(), idx)
	}
	if ok, _ := s.Intentions().Allowed("api", "web"); !ok {
		t.Fatal("restarted client does not enforce the persisted intention")
	}
	testnet.Eventually(t, 20*time.Second, "staleness reported", testnet.Holds(func() bool { return cl.Node.Status().Stale }))
	st := cl.Node.Status()
	if st.StalenessSeconds <= 0 || st.LastContact.IsZero() {
		t.Fatalf("status = %+v, want staleness since the last contact", st)
	}
}

// TestWrongClusterKeyCannotJoin starts a server with another key: it
// cannot take part in Raft, and the cluster never lists it as caught up.
func TestWrongClusterKeyCannotJoin(t *testing.T) {
	c := MakeTestCluster(t, 3)
	leader := c.Leader()
	// A server with a different key, announced by gossip.
	intruder := c.newServerNode("intruder", 0)
	intruder.Config.ClusterKey = bytes.Repeat([]byte{7}, 32)
	c.mu.Lock()
	c.servers = append(c.servers, intruder)
	c.mu.Unlock()
	if err := c.start(intruder); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	// It cannot call the servers' RPC port...
	var st ServerStatus
	err := intruder.Node.RPC().CallJSON(ctx, "GET", "/rpc/v1/status", nil, &st, CallOptions{Server: leader.Addr})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("intruder RPC = %v, want a certificate refusal", err)
	}
	// ...and Raft traffic to it fails: autopilot may list it as a
	// non-voter, but it never receives the log and is never promoted.
	if _, err := leader.Node.KVSet(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "autopilot to consider the intruder", testnet.Holds(func() bool {
		peers, _ := leader.Node.srv.peers()
		for _, p := range peers {
			if p.ID == "intruder" {
				return true
			}
		}
		return false
	}))
	// Give autopilot its stabilization time several times over.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		peers, _ := leader.Node.srv.peers()
		for _, p := range peers {
			if p.ID == "intruder" && p.Voter {
				t.Fatal("a server with the wrong key was promoted to voter")
			}
		}
		if intruder.Node.fsm.state().kvIndex > 0 {
			t.Fatal("a server with the wrong key received the log")
		}
		tick := time.NewTimer(50 * time.Millisecond)
		<-tick.C
	}
}

// TestAutopilot adds a server (non-voter, then voter once caught up), keeps
// voters when more look failed than quorum allows, removes one that stayed
// failed, and one that left at once.
func TestAutopilot(t *testing.T) {
	c := MakeTestCluster(t, 3, TestOptions{Configure: func(cfg *Config) {
		cfg.DeadServerThreshold = 300 * time.Millisecond
		cfg.StabilizationTime = 500 * time.Millisecond
	}})
	leader := c.Leader()
	ctx := ctxT(t, 30*time.Second)
	if _, err := leader.Node.KVSet(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s4 := c.AddServer("s4")
	peers := func() map[string]bool {
		p, err := c.Leader().Node.srv.peers()
		if err != nil {
			return nil
		}
		m := map[string]bool{}
		for _, x := range p {
			m[x.ID] = x.Voter
		}
		return m
	}
	testnet.Eventually(t, 30*time.Second, "s4 added as a non-voter", testnet.Holds(func() bool { v, in := peers()["s4"]; return in && !v }))
	testnet.Eventually(t, 30*time.Second, "s4 promoted to voter", testnet.Holds(func() bool { return peers()["s4"] }))
	if s4.Node.fsm.state().kvIndex == 0 {
		t.Fatal("s4 was promoted without the log")
	}

	// Gossip claims three of the four voters failed while Raft still works:
	// removing them would leave one voter of four, so none is removed.
	leader = c.Leader()
	var others []string
	for _, s := range c.Servers() {
		if s != leader {
			others = append(others, s.Name)
		}
	}
	for _, name := range others {
		c.Disc.Update(name, func(s *ServerInfo) { s.Status = catalog.StatusFailed })
	}
	deadline := time.Now().Add(2 * time.Second) // several thresholds
	for time.Now().Before(deadline) {
		if p := peers(); len(p) != 4 {
			t.Fatalf("autopilot removed voters below quorum: %v", p)
		}
		tick := time.NewTimer(50 * time.Millisecond)
		<-tick.C
	}
	// Two come back; one stays failed past the threshold: it is removed.
	for _, name := range others[1:] {
		c.Disc.Update(name, func(s *ServerInfo) { s.Status = catalog.StatusAlive })
	}
	testnet.Eventually(t, 30*time.Second, others[0]+" removed", testnet.Holds(func() bool { _, in := peers()[others[0]]; return !in && len(peers()) == 3 }))

	// A server that leaves is removed at once (threshold or not).
	c.Disc.Update(others[1], func(s *ServerInfo) { s.Status = catalog.StatusLeft })
	testnet.Eventually(t, 30*time.Second, others[1]+" removed after leaving", testnet.Holds(func() bool { _, in := peers()[others[1]]; return !in }))
	if p := peers(); len(p) != 2 {
		t.Fatalf("configuration after the leave: %v", p)
	}
}

// TestBootstrapExpectMismatch starts servers that disagree on bootstrap_expect: none
// bootstraps. Then the agreeing case bootstraps one cluster.
func TestBootstrapExpectMismatch(t *testing.T) {
	n := 0
	c := &TestCluster{t: t, Key: bytes.Repeat([]byte{1}, 32), Disc: NewStaticDiscovery(), net: newTestNet(NetTCP), base: t.TempDir()}
	c.opts.Logger = discardLogger()
	t.Cleanup(c.Close)
	for _, expect := range []int{3, 3, 5} {
		n++
		s := c.newServerNode(fmt.Sprintf("s%d", n), expect)
		c.servers = append(c.servers, s)
		if err := c.start(s); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.Servers() {
			if s.Node.srv.raft.State() == raft.Leader {
				t.Fatal("servers with different bootstrap_expect bootstrapped")
			}
		}
		tick := time.NewTimer(50 * time.Millisecond)
		<-tick.C
	}
}

func TestBootstrapMakesOneCluster(t *testing.T) {
	for round := 0; round < 3; round++ {
		c := MakeTestCluster(t, 3)
		leader := c.Leader()
		peers, err := leader.Node.srv.peers()
		if err != nil || len(peers) != 3 {
			t.Fatalf("round %d: configuration %v, %v", round, peers, err)
		}
		// Every server ends up in that one configuration: the ones that
		// did not bootstrap themselves receive it from the leader.
		for _, s := range c.Servers() {
			testnet.Eventually(t, 20*time.Second, s.Name+" holding the configuration", testnet.Holds(func() bool {
				f := s.Node.srv.raft.GetConfiguration()
				return f.Error() == nil && len(f.Configuration().Servers) == 3
			}))
			if _, id := s.Node.srv.raft.LeaderWithID(); string(id) != leader.Name {
				t.Fatalf("round %d: %s follows %q, not %s", round, s.Name, id, leader.Name)
			}
		}
		c.Close()
	}
}
