package ca

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/testnet"
)

// laggingBundles delivers the bundles of src with a delay under the test's
// control: until release is closed, only generations up to hold are passed
// on. It stands for an agent whose copy of the state lags behind.
type laggingBundles struct {
	src     BundleSource
	hold    uint64
	release chan struct{}
}

func (l *laggingBundles) WatchBundle(ctx context.Context, gen uint64) (*Bundle, error) {
	for {
		b, err := l.src.WatchBundle(ctx, gen)
		if err != nil {
			return nil, err
		}
		select {
		case <-l.release:
			return b, nil
		default:
		}
		if b.Generation <= l.hold {
			return b, nil
		}
		select {
		case <-l.release:
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// handshakeLoop dials addr with cfg over and over (bounded) until stopped,
// and counts the calls that completed (the server answered after verifying
// the client) and those that failed.
type handshakeLoop struct {
	ok, failed atomic.Int64
	firstErr   atomic.Pointer[error]
	stop       chan struct{}
	done       chan struct{}
}

func runHandshakes(addr string, cfg func() *tls.Config) *handshakeLoop {
	l := &handshakeLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; i < 200_000; i++ { // bounded in count; the test bounds it in time
			select {
			case <-l.stop:
				return
			default:
			}
			if err := oneCall(addr, cfg()); err != nil {
				if l.failed.Add(1) == 1 {
					l.firstErr.Store(&err)
				}
				continue
			}
			l.ok.Add(1)
		}
	}()
	return l
}

func oneCall(addr string, cfg *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	if line == "" {
		return errors.New("empty answer")
	}
	return nil
}

func (l *handshakeLoop) end(t *testing.T, name string) {
	t.Helper()
	close(l.stop)
	<-l.done
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%s: %d of %d calls failed; first: %v", name, n, n+l.ok.Load(), *l.firstErr.Load())
	}
}

// waitCalls waits until loop has completed n more calls.
func (l *handshakeLoop) waitCalls(t *testing.T, n int64, what string) {
	t.Helper()
	target := l.ok.Load() + n
	testnet.Eventually(t, 30*time.Second, what, testnet.Holds(func() bool { return l.ok.Load() >= target || l.failed.Load() > 0 }))
}

// TestRootRotationNoFailedHandshake rotates the root while two agents keep
// opening mTLS connections to each other, one of them seeing the new bundle
// late. Not one handshake may fail; at the end only the new root is
// trusted and every leaf is under it.
func TestRootRotationNoFailedHandshake(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	oldRoot := srv.Bundle().ActiveRoot
	x := c.manager("x", func(mc *ManagerConfig) { mc.Token = c.token(srv, "x") }, nil, fixed(rs.addr))
	lag := &laggingBundles{src: NewStateBundleSource(c.state, testTD), hold: srv.Bundle().Generation, release: make(chan struct{})}
	tokY := c.token(srv, "y")
	y, err := NewManager(ManagerConfig{TrustDomain: testTD, Node: "y", Token: tokY, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, RotationSpread: 100 * time.Millisecond},
		ManagerDeps{Issuer: c.rpcClient(fixed(rs.addr)), Bundles: lag, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := y.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { y.Close() })
	if err := y.WaitReady(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	addrX, errsX := tlsEcho(t, x)
	addrY, errsY := tlsEcho(t, y)
	yToX := runHandshakes(addrX, y.ClientTLSConfig)
	xToY := runHandshakes(addrY, x.ClientTLSConfig)
	defer func() {
		if !yToX.isStopped() {
			yToX.end(t, "y→x")
			xToY.end(t, "x→y")
		}
	}()
	yToX.waitCalls(t, 20, "calls before the rotation")
	xToY.waitCalls(t, 20, "calls before the rotation")

	// Step 1: a new root, trusted alongside the old one.
	st, err := srv.Rotate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.From != oldRoot || st.To == oldRoot {
		t.Fatalf("rotation %s → %s, old root %s", st.From, st.To, oldRoot)
	}
	if _, err := srv.Rotate(context.Background()); !errors.Is(err, ErrRotationInProgress) {
		t.Fatalf("second Rotate = %v, want ErrRotationInProgress", err)
	}
	// Step 2: x renews under the new root; y still trusts the old root
	// only, and the two keep talking (the cross-signed intermediate).
	testnet.Eventually(t, 20*time.Second, "x's leaf under the new root", testnet.Holds(func() bool {
		l, err := x.Leaf()
		return err == nil && l.Root == st.To
	}))
	if yb := y.Bundle(); len(yb.Roots) != 1 || yb.Has(st.To) {
		t.Fatal("y was meant to lag behind")
	}
	yToX.waitCalls(t, 20, "y (old bundle) calling x (new leaf)")
	xToY.waitCalls(t, 20, "x (new leaf) calling y (old bundle)")
	status, err := srv.RotationStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !status.InProgress || len(status.Pending) != 1 || status.Pending[0] != "y" {
		t.Fatalf("rotation status %+v, want y pending", status)
	}

	// Step 3: y catches up, renews; the old root is retired.
	close(lag.release)
	testnet.Eventually(t, 20*time.Second, "the old root to be retired everywhere", testnet.Holds(func() bool {
		for _, b := range []*Bundle{srv.Bundle(), x.Bundle(), y.Bundle(), rs.mgr.Bundle()} {
			if len(b.Roots) != 1 || b.ActiveRoot != st.To {
				return false
			}
		}
		return true
	}))
	yToX.waitCalls(t, 20, "calls after the retirement")
	xToY.waitCalls(t, 20, "calls after the retirement")
	yToX.end(t, "y→x")
	xToY.end(t, "x→y")
	if e := append(errsX(), errsY()...); len(e) > 0 {
		t.Errorf("%d server-side handshake failures; first: %v", len(e), e[0])
	}
	t.Logf("calls: y→x %d, x→y %d, none failed", yToX.ok.Load(), xToY.ok.Load())

	for name, m := range map[string]*Manager{"x": x, "y": y, "srv1": rs.mgr} {
		l, _ := m.Leaf()
		if l.Root != st.To {
			t.Errorf("%s's leaf is under %s, want the new root", name, l.Root)
		}
	}
	final, _ := srv.RotationStatus(context.Background())
	if final.InProgress || len(final.Retired) != 1 || final.Retired[0].Fingerprint != oldRoot {
		t.Fatalf("final status %+v", final)
	}
	// The old root's key is gone from the state.
	raw, _, _ := c.state.Get(context.Background(), KeyAuthority)
	as, _ := decodeAuthorityState(raw)
	if len(as.Roots) != 1 || len(as.Issuer.Chain) != 1 {
		t.Fatalf("state keeps %d roots and a chain of %d", len(as.Roots), len(as.Issuer.Chain))
	}
	// A new rotation may start again.
	if _, err := srv.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (l *handshakeLoop) isStopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// TestRotationWaitsForLiveNodesOnly: a node that is gone (its agent stopped)
// holds a leaf under the old root. With the live node list from gossip the
// rotation does not wait for it; without it, a server waits until that leaf
// has expired, and forgets a node whose leaf expired a lifetime ago.
func TestRotationWaitsForLiveNodesOnly(t *testing.T) {
	c := newCluster(t)
	live := []string{"srv1", "a"}
	srv := c.server("srv1", func(_ *ServerConfig, d *ServerDeps) { d.LiveNodes = func() []string { return live } })
	rs := c.rpc(srv)
	a := c.manager("a", func(mc *ManagerConfig) { mc.Token = c.token(srv, "a") }, nil, fixed(rs.addr))
	gone := c.manager("gone", func(mc *ManagerConfig) { mc.Token = c.token(srv, "gone") }, nil, fixed(rs.addr))
	gone.Close()
	ctx := context.Background()
	oldRoot := srv.Bundle().ActiveRoot
	// A node whose last leaf expired two hours ago.
	if err := srv.recordLeaf(ctx, "ancient", leafRecord{Serial: "1", Root: oldRoot, NotAfter: time.Now().Add(-2 * time.Hour), IssuedAt: time.Now().Add(-3 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// A server without the live list; not started (no maintenance of its
	// own), it only looks, through pendingNodes.
	blind := c.idleServer(ServerConfig{Node: "srv2"})

	st, err := srv.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.load(blind)
	testnet.Eventually(t, 20*time.Second, "a's and srv1's leaves under the new root", testnet.Holds(func() bool {
		la, _ := a.Leaf()
		ls, _ := rs.mgr.Leaf()
		return la.Root == st.To && ls.Root == st.To
	}))
	pending, forget, err := blind.pendingNodes(ctx, st.To)
	if err != nil || !slices.Equal(pending, []string{"gone"}) || !slices.Equal(forget, []string{"ancient"}) {
		t.Fatalf("without the live list: pending %v, forget %v (%v); want [gone], [ancient]", pending, forget, err)
	}
	// With the live list, the rotation completes although "gone" never
	// renewed.
	testnet.Eventually(t, 20*time.Second, "the rotation to complete", testnet.Holds(func() bool {
		b := srv.Bundle()
		return len(b.Roots) == 1 && b.ActiveRoot == st.To
	}))
	if err := blind.forgetNodes(ctx, forget); err != nil {
		t.Fatal(err)
	}
	if val, _, _ := c.state.Get(ctx, KeyLeafPrefix+"ancient"); val != nil {
		t.Fatal("the record of a forgotten node remains")
	}
	if pending, forget, _ := blind.pendingNodes(ctx, "another-root"); !slices.Equal(pending, []string{"a", "gone", "srv1"}) || len(forget) != 0 {
		t.Fatalf("after forgetting: pending %v forget %v", pending, forget)
	}
}
