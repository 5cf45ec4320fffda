package gossip_test

import (
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/meshtest"
)

// TestSyncedAfterTheFirstFullState: a member alone is never synced; once
// another joins it, both are, and the catalog each had published when
// Synced closed already holds the other's record, so that a restored
// catalog can be dropped at that moment without a gap.
func TestSyncedAfterTheFirstFullState(t *testing.T) {
	c := meshtest.NewCluster(t, 1, meshtest.Options{Loopback: true})
	first := c.Nodes[0]
	v := setLocal(t, first.Gossip, webRecord(8080, catalog.Passing))
	select {
	case <-first.Gossip.Synced():
		t.Fatal("a member alone says it is synced")
	default:
	}

	second := c.AddNode()
	for _, tc := range []struct {
		n     *meshtest.Node
		other string
	}{{second, first.Name}, {first, second.Name}} {
		select {
		case <-tc.n.Gossip.Synced():
		case <-time.After(waitLong):
			t.Fatalf("%s: not synced after %s joined", tc.n.Name, second.Name)
		}
		m, ok := tc.n.Snapshot().Member(tc.other)
		if !ok || m.Version == 0 {
			t.Fatalf("%s: synced, but its catalog has no record of %s: %+v", tc.n.Name, tc.other, m)
		}
	}
	if !passingOn(second.Snapshot(), first.Name, 8080) {
		t.Fatalf("%s: synced, but web on %s (version %d) is not in its catalog", second.Name, first.Name, v)
	}
}
