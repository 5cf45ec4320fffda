package raftstore

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/testnet"
)

// TestServersDecideAgentsCalls: with ACLs enabled on the servers, what a
// client agent sends them on a caller's behalf is decided again by the
// caller's token, so that an agent reaching the server port cannot do there
// what its own API would refuse. Servers' own writes are not affected.
func TestServersDecideAgentsCalls(t *testing.T) {
	c := MakeTestCluster(t, 3)
	cl := c.AddClient("c1")
	ctx := ctxT(t, 60*time.Second)

	// The bootstrap needs no token, on the servers as on the API.
	for _, s := range c.Servers() {
		s.Node.SetACLResolver(newResolver(t, s.Node.ACL()))
	}
	_, mgmt, err := acl.Bootstrap(ctx, cl.Node.ACL(), time.Now(), 0)
	if err != nil {
		t.Fatalf("bootstrap through a client agent: %v", err)
	}
	asMgmt := acl.WithSecret(ctx, mgmt)

	// ACL writes need acl:write.
	p := testPolicy(t, "defaults-writer", acl.Rules{Policy: map[string]acl.Access{"ServiceDefaults": acl.Write}})
	if _, err := cl.Node.ACL().SetPolicy(ctx, p, 0); !errors.Is(err, ErrForbidden) {
		t.Fatalf("ACL policy written without a token: %v, want ErrForbidden", err)
	}
	if _, err := cl.Node.ACL().SetPolicy(asMgmt, p, 0); err != nil {
		t.Fatalf("ACL policy written with the management token: %v", err)
	}
	tok, secret := testToken(t, acl.TypeClient, acl.PolicyLink{Name: p.Name})
	if _, err := cl.Node.ACL().SetToken(asMgmt, tok, 0); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "the leader holds the token", testnet.Holds(func() bool {
		_, err := c.Leader().Node.ACL().TokenBySecret(acl.HashSecret(secret))
		return err == nil
	}))
	asWriter := acl.WithSecret(ctx, secret)

	// Policy documents by their kind.
	if _, err := ApplyDoc(ctx, cl.Node, "kind: ServiceDefaults\nname: web\nprotocol: http\n"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("document written without a token: %v, want ErrForbidden", err)
	}
	if _, err := ApplyDoc(asWriter, cl.Node, "kind: IntentionDefaults\nname: default\naction: allow\n"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("allow-all written by a token that may write ServiceDefaults only: %v, want ErrForbidden", err)
	}
	if _, err := ApplyDoc(asWriter, cl.Node, "kind: ServiceDefaults\nname: web\nprotocol: http\n"); err != nil {
		t.Fatalf("document written with a token that may: %v", err)
	}

	// The internal namespace is the servers': even a management token
	// writes none of it through a client agent, while servers still do.
	if _, err := cl.Node.KVCAS(asMgmt, "ca/tokens/abc", []byte("used"), 0); !errors.Is(err, ErrForbidden) {
		t.Fatalf("internal key written by a client agent: %v, want ErrForbidden", err)
	}
	var follower *TestNode
	for _, s := range c.Servers() {
		if s != c.Leader() {
			follower = s
		}
	}
	if _, err := follower.Node.KVCAS(ctx, "ca/tokens/abc", []byte("used"), 0); err != nil {
		t.Fatalf("internal key written by a follower server: %v", err)
	}

	// Operator calls: the Raft peers and snapshots.
	if _, err := cl.Node.Peers(ctx); !errors.Is(err, ErrForbidden) {
		t.Fatalf("peers listed without a token: %v, want ErrForbidden", err)
	}
	if peers, err := cl.Node.Peers(asMgmt); err != nil || len(peers) != 3 {
		t.Fatalf("peers listed with the management token: %v, %v", peers, err)
	}
	if err := cl.Node.RemovePeer(asWriter, follower.Name); !errors.Is(err, ErrForbidden) {
		t.Fatalf("peer removed with a token without operator rights: %v, want ErrForbidden", err)
	}
	var buf bytes.Buffer
	if err := cl.Node.SaveSnapshot(ctx, &buf); !errors.Is(err, ErrForbidden) {
		t.Fatalf("snapshot saved without a token: %v, want ErrForbidden", err)
	}
	if err := cl.Node.SaveSnapshot(asMgmt, &buf); err != nil || buf.Len() == 0 {
		t.Fatalf("snapshot with the management token: %v (%d bytes)", err, buf.Len())
	}
	if _, err := cl.Node.RestoreSnapshot(asWriter, bytes.NewReader(buf.Bytes())); !errors.Is(err, ErrForbidden) {
		t.Fatalf("snapshot restored with a token without operator rights: %v, want ErrForbidden", err)
	}
}
