package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/policy"
)

// writer writes through one agent, one compare-and-set create after the
// other (each key once, cas=0), until stopped, and records what it was told.
// A write applied twice would answer its retry with a conflict, so a failure
// here also catches a doubled write.
type writer struct {
	t    *testing.T
	node *Node
	name string

	mu      sync.Mutex
	acked   map[string]uint64 // key -> acknowledged index
	failed  []error
	slowest time.Duration // longest acknowledged write, for the log

	stop chan struct{}
	done chan struct{}
}

func startWriter(t *testing.T, n *Node, name string) *writer {
	w := &writer{t: t, node: n, name: name, acked: map[string]uint64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	t.Cleanup(w.halt)
	return w
}

func (w *writer) run() {
	defer close(w.done)
	for i := 0; i < 5000; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		key := fmt.Sprintf("%s/%d", w.name, i)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		idx, err := w.node.KVCAS(ctx, key, []byte(key), 0)
		took := time.Since(start)
		cancel()
		w.mu.Lock()
		if err != nil {
			w.failed = append(w.failed, fmt.Errorf("%s: %w", key, err))
		} else {
			w.acked[key] = idx
			w.slowest = max(w.slowest, took)
		}
		w.mu.Unlock()
	}
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// check fails the test unless no write failed and every acknowledged write
// is in n's state exactly once, at the acknowledged index.
func (w *writer) check(n *Node) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, err := range w.failed {
		w.t.Errorf("write failed: %v", err)
	}
	st := n.fsm.state()
	for key, idx := range w.acked {
		e, ok := st.kvGet(key)
		switch {
		case !ok:
			w.t.Errorf("acknowledged write %s (index %d) is missing", key, idx)
		case e.CreateIndex != idx || e.ModifyIndex != idx:
			w.t.Errorf("write %s: acknowledged at %d, created at %d and modified at %d: applied more than once", key, idx, e.CreateIndex, e.ModifyIndex)
		}
	}
	w.t.Logf("%d writes acknowledged, slowest %s", len(w.acked), w.slowest.Round(time.Millisecond))
}

// TestWritesFollowLeadership writes through a client agent and through a
// follower while the leader is stalled (frozen as by SIGSTOP: its
// connections stay open and deliver nothing), killed, or cut off from the
// other servers. Writes must go on while the fault lasts (with a stalled
// leader, the old leader is still frozen when they are acknowledged), none
// may fail, and none may be applied twice.
func TestWritesFollowLeadership(t *testing.T) {
	faults := []struct {
		name   string
		inject func(c *TestCluster, leader *TestNode)
		undo   func(c *TestCluster, leader *TestNode)
	}{
		{"stall",
			func(c *TestCluster, l *TestNode) { c.Stall(l.Name, true) },
			func(c *TestCluster, l *TestNode) { c.Stall(l.Name, false) }},
		{"kill",
			func(c *TestCluster, l *TestNode) { c.Kill(c.Index(l)) },
			func(c *TestCluster, l *TestNode) { c.Restart(c.Index(l)) }},
		{"cut",
			func(c *TestCluster, l *TestNode) {
				var others []int
				for i, s := range c.Servers() {
					if s != l {
						others = append(others, i)
					}
				}
				c.Partition([]int{c.Index(l)}, others)
			},
			func(c *TestCluster, _ *TestNode) { c.Heal() }},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			c := MakeTestCluster(t, 3)
			client := c.AddClient("client")
			old := c.Leader()
			var follower *TestNode
			for _, s := range c.Servers() {
				if s != old {
					follower = s
					break
				}
			}
			writers := []*writer{startWriter(t, client.Node, "via-client"), startWriter(t, follower.Node, "via-follower")}
			for _, w := range writers {
				testnet.Eventually(t, 30*time.Second, w.name+" writes before the fault", testnet.Holds(func() bool { return w.count() >= 5 }))
			}

			f.inject(c, old)
			before := make([]int, len(writers))
			for i, w := range writers {
				before[i] = w.count()
			}
			// Writes are acknowledged while the fault lasts.
			for i, w := range writers {
				testnet.Eventually(t, 30*time.Second, w.name+" writes during the fault", testnet.Holds(func() bool { return w.count() >= before[i]+10 }))
			}
			if f.name == "stall" && !c.net.isStalled(old.Name) {
				t.Fatal("the stall ended before the writes were checked")
			}
			newLeader := c.Leader()
			if newLeader == old {
				t.Fatalf("%s is still the leader", old.Name)
			}
			for _, w := range writers {
				w.halt()
			}
			f.undo(c, old)
			if err := newLeader.Node.srv.barrier(); err != nil {
				t.Fatalf("barrier on the new leader: %v", err)
			}
			for _, w := range writers {
				w.check(newLeader.Node)
			}
			// The old leader comes back and holds the same writes.
			n := c.Server(c.Index(old)).Node
			want := newLeader.Node.fsm.state().kvIndex
			testnet.Eventually(t, 30*time.Second, "old leader catching up", testnet.Holds(func() bool { return n.fsm.state().kvIndex >= want }))
		})
	}
}

// TestLeaderLostMidWrite makes a write whose answer never arrives: the
// leader applies it, the client hears nothing back, and the leader is
// killed. The client must say the outcome is unknown (not a conflict, not
// "no leader"); a retry with the same key must then report the first
// application, and apply nothing more.
func TestLeaderLostMidWrite(t *testing.T) {
	c := MakeTestCluster(t, 3)
	client := c.AddClient("client")
	ctx := ctxT(t, 60*time.Second)
	if _, err := client.Node.KVSet(ctx, "warm-up", []byte("x")); err != nil {
		t.Fatal(err)
	}
	old := c.Leader()

	c.Deafen(client.Name, true)
	wctx, cancel := context.WithTimeout(WithIdempotencyKey(ctx, "key-1"), 4*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := client.Node.KVCAS(wctx, "token", []byte("first"), 0)
		errc <- err
	}()
	testnet.Eventually(t, 30*time.Second, "the write applied on the leader", testnet.Holds(func() bool {
		_, ok := old.Node.fsm.state().kvGet("token")
		return ok
	}))
	c.Kill(c.Index(old))
	err := <-errc
	if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrCASConflict) || errors.Is(err, ErrNoLeader) {
		t.Fatalf("write whose answer was lost = %v, want ErrOutcomeUnknown only", err)
	}
	if !strings.Contains(err.Error(), "may or may not have been applied") {
		t.Fatalf("error %q does not say the write may have been applied", err)
	}
	c.Deafen(client.Name, false)

	newLeader := c.Leader()
	e, ok := newLeader.Node.fsm.state().kvGet("token")
	if !ok {
		t.Fatal("the write is not on the new leader")
	}
	applied := e.ModifyIndex
	// The retry under the same key reports the first application.
	for i := 0; i < 2; i++ {
		idx, err := client.Node.KVCAS(WithIdempotencyKey(ctx, "key-1"), "token", []byte("first"), 0)
		if err != nil || idx != applied {
			t.Fatalf("retry %d with the same key = %d, %v; want the first application's index %d", i+1, idx, err, applied)
		}
	}
	if e, _ := newLeader.Node.fsm.state().kvGet("token"); e.ModifyIndex != applied || e.CreateIndex != applied {
		t.Fatalf("after the retries the key is at create %d, modify %d; want both %d", e.CreateIndex, e.ModifyIndex, applied)
	}
	// A new write under a new key is judged on its own: cas=0 conflicts.
	if _, err := client.Node.KVCAS(WithIdempotencyKey(ctx, "key-2"), "token", []byte("second"), 0); !errors.Is(err, ErrCASConflict) {
		t.Fatalf("new write with cas=0 on an existing key = %v, want ErrCASConflict", err)
	}
	// The same key with another write is refused.
	if _, err := client.Node.KVCAS(WithIdempotencyKey(ctx, "key-1"), "token", []byte("other"), 0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "different write") {
		t.Fatalf("key reused for another write = %v, want ErrInvalid naming the reuse", err)
	}
}

// TestLargeConsistentReadThroughClient reads a policy set of thousands of
// documents (over 400 KB of JSON) consistently through a client agent: the
// answer's body must stay readable after the call returns (issue 23, item
// 4), for the whole set and for one document through the HTTP API.
func TestLargeConsistentReadThroughClient(t *testing.T) {
	c := MakeTestCluster(t, 3)
	client := c.AddClient("client")
	leader := c.Leader()
	ctx := ctxT(t, 120*time.Second)
	const total = 3100
	for start := 0; start < total; start += policy.MaxDocuments {
		var b strings.Builder
		for i := start; i < min(start+policy.MaxDocuments, total); i++ {
			fmt.Fprintf(&b, "---\nkind: ServiceDefaults\nname: service-with-a-long-and-quite-descriptive-name-number-%04d\nprotocol: http\n", i)
		}
		if _, err := ApplyDoc(ctx, leader.Node, b.String()); err != nil {
			t.Fatal(err)
		}
	}
	size := len(leader.Node.fsm.state().streamLine())
	if size < 400<<10 {
		t.Fatalf("the policy set is %d bytes of JSON, want a large one", size)
	}
	// No deadline in the context: the client sets its own.
	s, err := client.Node.ConsistentPolicy(context.Background())
	if err != nil {
		t.Fatalf("consistent read of %d bytes: %v", size, err)
	}
	if s.Len() != total {
		t.Fatalf("consistent read returned %d documents, want %d", s.Len(), total)
	}
	srv := apiServer(t, client.Node)
	status, body, _ := call(t, "GET", srv.URL+"/v1/policy/ServiceDefaults/service-with-a-long-and-quite-descriptive-name-number-0042?consistent", "")
	if status != http.StatusOK || !strings.Contains(body, "number-0042") {
		t.Fatalf("consistent read of one document: %d %s", status, body)
	}
	t.Logf("read %d documents, %d bytes of JSON", s.Len(), size)
}

// TestGossipMovesWritesOff checks that a client agent abandons an attempt
// as soon as gossip says the server it called is suspect, before any
// attempt timeout: the client here waits a minute per attempt, and its
// write to a stalled leader still completes on the new one.
func TestGossipMovesWritesOff(t *testing.T) {
	c := MakeTestCluster(t, 3)
	client := c.AddClient("client")
	c.StopClient(client)
	slow := 20 * time.Second
	client.Config.Timing = Timing{HeartbeatTimeout: slow, ElectionTimeout: slow, LeaderLeaseTimeout: slow, CommitTimeout: time.Second}
	c.StartClient(client)
	if got := AttemptTimeout(client.Config.Timing); got < time.Minute {
		t.Fatalf("attempt timeout %s, want a minute or more", got)
	}
	ctx := ctxT(t, 30*time.Second)
	if _, err := client.Node.KVSet(ctx, "warm-up", []byte("x")); err != nil {
		t.Fatal(err)
	}
	old := c.Leader()
	c.Stall(old.Name, true)
	errc := make(chan error, 1)
	go func() {
		_, err := client.Node.KVCAS(ctx, "token", []byte("v"), 0)
		errc <- err
	}()
	// The new leader is elected while the write waits on the old one.
	testnet.Eventually(t, 20*time.Second, "a new leader", testnet.Holds(func() bool {
		l := c.currentLeader()
		return l != nil && l != old
	}))
	c.Disc.Update(old.Name, func(s *ServerInfo) { s.Status = "suspect" })
	if err := <-errc; err != nil {
		t.Fatalf("write after gossip marked the stalled leader suspect: %v", err)
	}
	if !c.net.isStalled(old.Name) {
		t.Fatal("the stall ended before the write was acknowledged")
	}
	c.Stall(old.Name, false)
	want := c.Leader().Node.fsm.state().kvIndex
	testnet.Eventually(t, 30*time.Second, "old leader catching up", testnet.Holds(func() bool { return old.Node.fsm.state().kvIndex >= want }))
}
