package raftstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestClusterBasics(t *testing.T) {
	for _, mode := range []struct {
		name string
		net  TestNetwork
	}{{"tcp", NetTCP}, {"inmem", NetInmem}} {
		t.Run(mode.name, func(t *testing.T) {
			c := MakeTestCluster(t, 3, TestOptions{Network: mode.net})
			leader := c.Leader()
			var follower *TestNode
			for _, s := range c.Servers() {
				if s != leader {
					follower = s
				}
			}
			client := c.AddClient("c1")
			ctx := ctxT(t, 30*time.Second)

			// A write through a follower is forwarded to the leader.
			idx, err := ApplyDoc(ctx, follower.Node, "kind: ServiceDefaults\nname: web\nprotocol: http\n")
			if err != nil {
				t.Fatalf("apply via follower: %v", err)
			}
			// And one through the client agent.
			idx2, err := ApplyDoc(ctx, client.Node, "kind: IntentionDefaults\nname: default\naction: deny\n")
			if err != nil || idx2 <= idx {
				t.Fatalf("apply via client: %d, %v", idx2, err)
			}
			// Every agent's replica reaches the index.
			for _, n := range append(c.Servers(), client) {
				s, err := n.Node.Replica().Wait(ctx, idx2-1)
				if err != nil {
					t.Fatalf("%s: wait: %v", n.Name, err)
				}
				if s.ProtocolFor("web") != policy.ProtocolHTTP {
					t.Fatalf("%s: protocol of web = %s", n.Name, s.ProtocolFor("web"))
				}
			}
			// CAS: a stale index is refused with ErrCASConflict.
			stale := idx - 1
			_, err = client.Node.ApplyDocuments(ctx, mustDocs(t, "kind: ServiceDefaults\nname: web\nprotocol: grpc\n"), &stale)
			if !errors.Is(err, ErrCASConflict) {
				t.Fatalf("stale CAS = %v, want ErrCASConflict", err)
			}
			cur := idx
			if _, err = client.Node.ApplyDocuments(ctx, mustDocs(t, "kind: ServiceDefaults\nname: web\nprotocol: grpc\n"), &cur); err != nil {
				t.Fatalf("CAS at the current index: %v", err)
			}
			// Consistent read from the client sees it at once.
			s, err := client.Node.ConsistentPolicy(ctx)
			if err != nil || s.ProtocolFor("web") != policy.ProtocolGRPC {
				t.Fatalf("consistent read = %v, %v", s, err)
			}
			// Delete; a second delete is ErrNotFound.
			if _, err := client.Node.DeleteDocument(ctx, policy.Key{Kind: policy.KindServiceDefaults, Name: "web"}, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Node.DeleteDocument(ctx, policy.Key{Kind: policy.KindServiceDefaults, Name: "web"}, nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second delete = %v, want ErrNotFound", err)
			}
		})
	}
}

func mustDocs(t *testing.T, src string) []policy.Document {
	t.Helper()
	d, err := policy.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestKVNamespace(t *testing.T) {
	c := MakeTestCluster(t, 3)
	client := c.AddClient("c1")
	ctx := ctxT(t, 30*time.Second)
	leader := c.Leader()

	// One-time token: the second create-only write fails.
	if _, err := client.Node.KVCAS(ctx, "ca/tokens/abc", []byte("used"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Node.KVCAS(ctx, "ca/tokens/abc", []byte("used"), 0); !errors.Is(err, ErrCASConflict) {
		t.Fatalf("token reuse = %v, want ErrCASConflict", err)
	}
	// Secrets: written from anywhere, read only inside a server.
	if _, err := client.Node.KVSet(ctx, SecretPrefix+"ca/key", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := client.Node.KVGet(ctx, SecretPrefix+"ca/key"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("client read of a secret = %v, want ErrForbidden", err)
	}
	if v, _, err := leader.Node.KVGetConsistent(ctx, SecretPrefix+"ca/key"); err != nil || string(v) != "k" {
		t.Fatalf("server read of a secret = %q, %v", v, err)
	}
	// A watch from the client wakes on a change and never carries secrets.
	_, idx, err := client.Node.KVList(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan []KVEntry, 1)
	go func() {
		e, _, err := client.Node.KVWatch(ctx, "ca/", idx)
		if err != nil {
			t.Error(err)
		}
		done <- e
	}()
	if _, err := leader.Node.KVSet(ctx, "ca/roots", []byte("bundle")); err != nil {
		t.Fatal(err)
	}
	select {
	case entries := <-done:
		found := false
		for _, e := range entries {
			if strings.HasPrefix(e.Key, SecretPrefix) {
				t.Fatalf("watch returned a secret key %q", e.Key)
			}
			found = found || (e.Key == "ca/roots" && string(e.Value) == "bundle")
		}
		if !found {
			t.Fatalf("watch did not return ca/roots: %+v", entries)
		}
	case <-ctx.Done():
		t.Fatal("KVWatch did not wake")
	}
}
