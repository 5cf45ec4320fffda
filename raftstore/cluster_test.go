package raftstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meshwork/meshwork/internal/testnet"
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
	}{{"tcp", NetTCP}, {"twin", NetTwin}} {
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

// TestStreamStaysOpen checks that a client agent receives changes on one
// long-lived stream, not by reconnecting.
func TestStreamStaysOpen(t *testing.T) {
	c := MakeTestCluster(t, 3)
	cl := c.AddClient("c1")
	ctx := ctxT(t, 30*time.Second)
	if _, err := ApplyDoc(ctx, cl.Node, "kind: ServiceDefaults\nname: a\n"); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "first stream", testnet.Holds(func() bool { return cl.Node.Policy().Len() == 1 }))
	opened := func() float64 {
		var n float64
		for _, s := range c.Servers() {
			n += testutilCount(s.Node, "GET /rpc/v1/policy/stream")
		}
		return n
	}
	before := opened()
	for i := 0; i < 5; i++ {
		idx, err := ApplyDoc(ctx, cl.Node, fmt.Sprintf("kind: ServiceDefaults\nname: s%d\n", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Node.Replica().Wait(ctx, idx-1); err != nil {
			t.Fatal(err)
		}
	}
	if after := opened(); after != before {
		t.Fatalf("the client opened %v streams for 5 changes, want 0 (it should stay on one)", after-before)
	}
}

// testutilCount returns how many requests of route the node's RPC server
// has finished (a stream counts when it ends).
func testutilCount(n *Node, route string) float64 {
	var total float64
	for _, code := range []string{"ok", "internal"} {
		m := &dto.Metric{}
		if err := n.m.rpcRequests.WithLabelValues(route, code).Write(m); err == nil {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}
