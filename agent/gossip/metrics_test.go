package gossip

import (
	"sort"
	"testing"

	"github.com/meshwork/meshwork/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricNames checks the exported names against the documented list.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, err := New(FastTestConfig("m"), Deps{Store: catalog.NewStore(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	g.metrics.received.WithLabelValues("record").Inc()
	g.metrics.pushPull.WithLabelValues("sent").Inc()
	g.metrics.streams.WithLabelValues("record", "ok").Inc()
	g.metrics.keyringOps.WithLabelValues("list", "ok").Inc()
	g.metrics.joins.WithLabelValues("rejoin", "ok").Inc()
	g.metrics.peersFile.WithLabelValues("write", "ok").Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	want := []string{
		"meshwork_gossip_broadcasts_queued",
		"meshwork_gossip_down_notices_total",
		"meshwork_gossip_in_contact",
		"meshwork_gossip_join_attempts_total",
		"meshwork_gossip_keyring_operations_total",
		"meshwork_gossip_members",
		"meshwork_gossip_messages_received_total",
		"meshwork_gossip_messages_refused_total",
		"meshwork_gossip_peers_file_operations_total",
		"meshwork_gossip_push_pull_total",
		"meshwork_gossip_received_bytes_total",
		"meshwork_gossip_sent_bytes_total",
		"meshwork_gossip_stream_messages_sent_total",
	}
	sort.Strings(got)
	if len(got) != len(want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("metrics %v, want %v", got, want)
		}
	}
	// A second member in the same registry is refused, not silently merged.
	if _, err := New(FastTestConfig("m2"), Deps{Store: catalog.NewStore(), Registerer: reg}); err == nil {
		t.Fatal("a second member registered the same metrics without error")
	}
}
