package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/testnet"
)

func newResolver(t *testing.T, store acl.Reader) *acl.Resolver {
	t.Helper()
	r, err := acl.NewResolver(acl.Config{Enabled: true}, acl.Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// webToken makes, through node, a policy that writes service web and a
// token that links it; it returns the token's secret.
func webToken(t *testing.T, ctx context.Context, node *Node) (*acl.Token, string) {
	t.Helper()
	p := testPolicy(t, "web-"+strconv.FormatInt(time.Now().UnixNano(), 36), acl.Rules{Service: map[string]acl.Access{"web": acl.Write}})
	if _, err := node.ACL().SetPolicy(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	tok, secret := testToken(t, acl.TypeClient, acl.PolicyLink{Name: p.Name})
	stored, err := node.ACL().SetToken(ctx, tok, 0)
	if err != nil {
		t.Fatal(err)
	}
	return stored, secret
}

// TestACLReplicatesToClient writes tokens and policies through a client
// agent of a real cluster: the writes are forwarded to the leader, read
// back, visible at once in the client's own copy (which persists them,
// 0600, without secrets), and resolvable there.
func TestACLReplicatesToClient(t *testing.T) {
	c := MakeTestCluster(t, 3)
	cl := c.AddClient("c1")
	other := c.AddClient("c2")
	ctx := ctxT(t, 60*time.Second)

	boot, bootSecret, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if boot.CreateIndex == 0 || boot.Type != acl.TypeManagement {
		t.Fatalf("bootstrap answered %+v", boot)
	}
	tok, secret := webToken(t, ctx, cl.Node)
	if tok.ModifyIndex == 0 || tok.Policies[0].ID == "" {
		t.Fatalf("the write answered %+v, not the stored token", tok)
	}
	// The writer's own copy holds the write when the write returns.
	res := newResolver(t, cl.Node.ACL())
	authz, err := res.Resolve(secret)
	if err != nil {
		t.Fatal(err)
	}
	if !authz.Allowed(acl.ResourceService, "web", acl.Write) || authz.Allowed(acl.ResourceService, "api", acl.Write) {
		t.Fatal("the token's rules are not what its policy says")
	}
	if a, err := res.Resolve(bootSecret); err != nil || !a.Allowed(acl.ResourceOperator, acl.OperatorRaft, acl.Write) {
		t.Fatalf("bootstrap token: %v", err)
	}
	// Every other agent follows.
	for _, n := range append(c.Servers(), other) {
		testnet.Eventually(t, 20*time.Second, n.Name+" holds the token", testnet.Holds(func() bool {
			_, err := n.Node.ACL().TokenBySecret(acl.HashSecret(secret))
			return err == nil
		}))
	}
	// A delete reaches the others too, and the resolver notices.
	oRes := newResolver(t, other.Node.ACL())
	if _, err := oRes.Resolve(secret); err != nil {
		t.Fatal(err)
	}
	if err := other.Node.ACL().DeleteToken(ctx, tok.AccessorID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := oRes.Resolve(secret); !errors.Is(err, acl.ErrTokenNotFound) {
		t.Fatalf("deleted token resolves on the deleting agent: %v", err)
	}
	testnet.Eventually(t, 20*time.Second, "the delete on c1", testnet.Holds(func() bool {
		_, err := res.Resolve(secret)
		return errors.Is(err, acl.ErrTokenNotFound)
	}))

	// The persisted copy: 0600, hashes, never a secret.
	path := filepath.Join(cl.DataDir, ACLFile)
	testnet.Eventually(t, 10*time.Second, "the persisted copy", testnet.Holds(func() bool {
		b, err := os.ReadFile(path)
		return err == nil && bytes.Contains(b, []byte(boot.AccessorID)) && !bytes.Contains(b, []byte(tok.AccessorID))
	}))
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v; want 0600", path, err, st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte(bootSecret)) || bytes.Contains(b, []byte(secret)) {
		t.Fatal("the persisted copy holds a secret")
	}
}

// TestACLBootstrapOnce: agents that bootstrap at the same moment get one
// management token between them; the others are refused with the reset
// index, which only a server's reset file can give back.
func TestACLBootstrapOnce(t *testing.T) {
	c := MakeTestCluster(t, 3)
	cl := c.AddClient("c1")
	ctx := ctxT(t, 60*time.Second)
	nodes := []*Node{cl.Node, c.Server(0).Node, c.Server(1).Node, c.Server(2).Node, cl.Node, c.Server(1).Node}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		wins    []*acl.Token
		refused []error
	)
	start := make(chan struct{})
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, _, err := acl.Bootstrap(ctx, n.ACL(), time.Now(), 0)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins = append(wins, tok)
			} else {
				refused = append(refused, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d bootstraps won, want 1 (refusals: %v)", len(wins), refused)
	}
	for _, err := range refused {
		if !errors.Is(err, acl.ErrBootstrapDone) {
			t.Fatalf("a concurrent bootstrap failed with %v, want ErrBootstrapDone", err)
		}
	}
	msg := refused[0].Error()
	reset := msg[strings.LastIndex(msg, "reset index: ")+len("reset index: "):]
	reset = strings.TrimRight(reset, ")")
	if reset != strconv.FormatUint(wins[0].CreateIndex, 10) {
		t.Fatalf("refusal %q names reset index %q, want %d", msg, reset, wins[0].CreateIndex)
	}
	// The winner may be a server: the client's copy follows.
	testnet.Eventually(t, 20*time.Second, "the client's copy holds the anonymous and the bootstrap token", testnet.Holds(func() bool {
		return len(cl.Node.ACL().Tokens()) == 2
	}))

	// A bad reset file is named; the right index lets one more bootstrap
	// through, once.
	for _, s := range c.Servers() {
		if err := os.WriteFile(filepath.Join(s.DataDir, ACLBootstrapResetFile), []byte("soon\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `holds "soon"`) {
		t.Fatalf("bootstrap with a bad reset file: %v", err)
	}
	for _, s := range c.Servers() {
		if err := os.WriteFile(filepath.Join(s.DataDir, ACLBootstrapResetFile), []byte(reset+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	again, _, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 999)
	if err != nil {
		t.Fatalf("bootstrap with the reset file: %v", err)
	}
	if _, _, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 0); !errors.Is(err, acl.ErrBootstrapDone) {
		t.Fatalf("the same reset index served twice: %v", err)
	}
	if again.CreateIndex <= wins[0].CreateIndex {
		t.Fatalf("second bootstrap at %d, first at %d", again.CreateIndex, wins[0].CreateIndex)
	}
}

// TestACLRestoreKeepsBootstrapClosed: a backup taken before the bootstrap,
// restored after it, brings back the older tokens but does not re-open
// the bootstrap, and the agents see the restored state as newer.
func TestACLRestoreKeepsBootstrapClosed(t *testing.T) {
	c := MakeTestCluster(t, 1)
	cl := c.AddClient("c1")
	ctx := ctxT(t, 60*time.Second)
	early, earlySecret := webToken(t, ctx, cl.Node)
	var backup bytes.Buffer
	if err := cl.Node.SaveSnapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	if err := cl.Node.ACL().DeleteToken(ctx, early.AccessorID, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	before := cl.Node.ACL().State().Index()

	if _, err := cl.Node.RestoreSnapshot(ctx, bytes.NewReader(backup.Bytes())); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "the client to see the restored state", testnet.Holds(func() bool {
		_, err := cl.Node.ACL().TokenBySecret(acl.HashSecret(earlySecret))
		return err == nil
	}))
	st := cl.Node.ACL().State()
	if st.Index() <= before {
		t.Fatalf("acl index %d after the restore, not above %d", st.Index(), before)
	}
	if _, _, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 0); !errors.Is(err, acl.ErrBootstrapDone) {
		t.Fatalf("bootstrap after restoring a backup older than it: %v, want ErrBootstrapDone", err)
	}
	// The server restarts from its snapshot and log with the same state.
	leader := c.Leader()
	c.Kill(0)
	c.Restart(0)
	c.Leader()
	// The restarted server replays its log after it leads again.
	testnet.Eventually(t, 20*time.Second, "the restarted server's ACL state", testnet.Holds(func() bool {
		return leader.Node.ACL().State().Index() >= st.Index()
	}))
	got := leader.Node.ACL().State()
	if got.BootstrapIndex() != st.BootstrapIndex() || got.Index() < st.Index() {
		t.Fatalf("after a restart: bootstrap index %d, index %d; had %d, %d", got.BootstrapIndex(), got.Index(), st.BootstrapIndex(), st.Index())
	}
	if _, err := got.Token(early.AccessorID); err != nil {
		t.Fatalf("token after restart: %v", err)
	}
}

// TestACLClientEnforcesPersistedCopy: a client agent restarted while every
// server is down resolves tokens from the copy it persisted.
func TestACLClientEnforcesPersistedCopy(t *testing.T) {
	c := MakeTestCluster(t, 1)
	cl := c.AddClient("c1")
	ctx := ctxT(t, 60*time.Second)
	_, secret := webToken(t, ctx, cl.Node)
	c.StopClient(cl)
	c.Kill(0)
	c.StartClient(cl)
	res := newResolver(t, cl.Node.ACL())
	authz, err := res.Resolve(secret)
	if err != nil {
		t.Fatalf("resolve with every server down: %v", err)
	}
	if err := authz.Check(acl.ResourceService, "web", acl.Write); err != nil {
		t.Fatal(err)
	}
	if err := authz.Check(acl.ResourceService, "api", acl.Write); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Fatalf("service api: %v, want a denial", err)
	}
	unknown, _ := acl.NewSecret()
	if _, err := res.Resolve(unknown); !errors.Is(err, acl.ErrTokenNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	// A damaged file is ignored: the agent starts with the builtins and
	// denies.
	c.StopClient(cl)
	if err := os.WriteFile(filepath.Join(cl.DataDir, ACLFile), []byte(`{"state":`), 0o600); err != nil {
		t.Fatal(err)
	}
	c.StartClient(cl)
	if _, err := newResolver(t, cl.Node.ACL()).Resolve(secret); !errors.Is(err, acl.ErrTokenNotFound) {
		t.Fatalf("after a damaged file: %v", err)
	}
}

// TestACLInitialManagement: servers configured with an initial management
// secret make it into the bootstrap token once, whichever leads.
func TestACLInitialManagement(t *testing.T) {
	secret, _ := acl.NewSecret()
	c := MakeTestCluster(t, 3, TestOptions{Configure: func(cfg *Config) { cfg.ACLInitialManagement = secret }})
	cl := c.AddClient("c1")
	testnet.Eventually(t, 30*time.Second, "the initial management token on the client", testnet.Holds(func() bool {
		_, err := cl.Node.ACL().TokenBySecret(acl.HashSecret(secret))
		return err == nil
	}))
	authz, err := newResolver(t, cl.Node.ACL()).Resolve(secret)
	if err != nil || !authz.Allowed(acl.ResourceACL, "", acl.Write) {
		t.Fatalf("initial management token: %v", err)
	}
	ctx := ctxT(t, 30*time.Second)
	if _, _, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 0); !errors.Is(err, acl.ErrBootstrapDone) {
		t.Fatalf("bootstrap after the initial management token: %v", err)
	}
	// A new leader does not make a second one.
	old := c.Leader()
	c.Kill(c.Index(old))
	c.Leader()
	c.Restart(c.Index(old))
	c.Leader()
	mgmt := 0
	for _, tok := range cl.Node.ACL().Tokens() {
		if tok.Type == acl.TypeManagement {
			mgmt++
		}
	}
	if mgmt != 1 {
		t.Fatalf("%d management tokens, want 1", mgmt)
	}
	if _, err := New(Config{NodeName: "x", DataDir: t.TempDir(), ClusterKey: c.Key, ACLInitialManagement: "mwt_short"}, Deps{Discovery: c.Disc}); err == nil || strings.Contains(err.Error(), "mwt_short") {
		t.Fatalf("a client with an initial management secret: %v", err)
	}
}

// TestACLWatchBlocks: a client agent's watch waits on the server while the
// ACL state does not change, also when nothing was ever written (index 0),
// rather than asking again at once.
func TestACLWatchBlocks(t *testing.T) {
	c := MakeTestCluster(t, 1)
	srv := c.Server(0).Node
	watches := func() float64 {
		var m dto.Metric
		if err := srv.m.rpcRequests.WithLabelValues("GET /rpc/v1/acl", "ok").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	cl := c.AddClient("c1")
	ctx := ctxT(t, 60*time.Second)
	// Twenty policy writes, each seen by the client: time enough for a
	// watch that does not block to ask hundreds of times.
	var idx uint64
	for i := range 20 {
		var err error
		if idx, err = ApplyDoc(ctx, cl.Node, fmt.Sprintf("kind: ServiceDefaults\nname: s%d\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Node.Replica().Wait(ctx, idx-1); err != nil {
		t.Fatal(err)
	}
	if n := watches(); n > 2 {
		t.Fatalf("the client asked the server for the unchanged ACL state %v times", n)
	}
	// A change still reaches it at once.
	_, secret := webToken(t, ctx, c.Server(0).Node)
	testnet.Eventually(t, 20*time.Second, "the client to hold the token", testnet.Holds(func() bool {
		_, err := cl.Node.ACL().TokenBySecret(acl.HashSecret(secret))
		return err == nil
	}))
}
