package catalog

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func testMembers() []Member {
	return []Member{
		{Status: StatusAlive, Record: Record{Node: "Node-A", Addr: "10.0.0.1", Services: []Service{
			{ID: "web-1", Name: "Web", Port: 80, Tags: []string{"V1"}, Health: Passing},
			{ID: "db", Name: "db", Port: 5432, Health: Critical},
		}}},
		{Status: StatusFailed, Record: Record{Node: "node-b", Addr: "10.0.0.2", Services: []Service{
			{ID: "web-2", Name: "web", Port: 80, Health: Passing},
		}}},
		{Status: StatusSuspect, Record: Record{Node: "node-c", Addr: "10.0.0.3", Services: []Service{
			{ID: "web-3", Name: "web", Address: "10.9.9.9", Port: 8080, Tags: []string{"v2"}, Health: Passing},
		}}},
	}
}

func TestSnapshotLookups(t *testing.T) {
	s := NewSnapshot(7, testMembers())
	if s.Index() != 7 {
		t.Fatalf("index = %d, want 7", s.Index())
	}
	tests := []struct {
		name, svc, tag string
		wantIDs        []string
	}{
		{"passing skips failed node", "web", "", []string{"web-1", "web-3"}},
		{"case-insensitive name", "WEB", "", []string{"web-1", "web-3"}},
		{"tag filter", "web", "v1", []string{"web-1"}},
		{"tag case-insensitive", "web", "V2", []string{"web-3"}},
		{"critical excluded", "db", "", nil},
		{"unknown service", "nope", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := s.Passing(tc.svc, tc.tag)
			if len(got) != len(tc.wantIDs) {
				t.Fatalf("got %d instances, want %v", len(got), tc.wantIDs)
			}
			for i, inst := range got {
				if inst.Service.ID != tc.wantIDs[i] {
					t.Errorf("instance %d = %s, want %s", i, inst.Service.ID, tc.wantIDs[i])
				}
			}
		})
	}
	if !s.HasService("DB") || s.HasService("nope") {
		t.Error("HasService does not tell registered from unknown services")
	}
	if got := len(s.Instances("web")); got != 3 {
		t.Errorf("Instances(web) = %d, want 3", got)
	}
	if m, ok := s.Member("NODE-a"); !ok || m.Node != "Node-A" {
		t.Errorf("Member(NODE-a) = %v, %v", m, ok)
	}
	if got := s.Passing("web", "v2")[0].IP; got != netip.MustParseAddr("10.9.9.9") {
		t.Errorf("service address not used: %s", got)
	}
	if got := s.NamesAt(netip.MustParseAddr("10.0.0.1")); len(got) != 1 || got[0] != "Node-A.node" {
		t.Errorf("NamesAt(10.0.0.1) = %v", got)
	}
	if got := s.ServiceNames(); len(got) != 2 || got[0] != "Web" || got[1] != "db" {
		t.Errorf("ServiceNames = %v", got)
	}
}

func TestStoreWait(t *testing.T) {
	st := NewStore()
	first := st.Current().Index()

	done := make(chan *Snapshot)
	go func() {
		snap, err := st.Wait(context.Background(), first)
		if err != nil {
			t.Error(err)
		}
		done <- snap
	}()
	st.Publish(testMembers())
	select {
	case snap := <-done:
		if snap.Index() <= first {
			t.Fatalf("woke with index %d, want > %d", snap.Index(), first)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not wake on Publish")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	snap, err := st.Wait(ctx, st.Current().Index())
	if err == nil || snap == nil {
		t.Fatalf("Wait on a done context = %v, %v; want the snapshot and an error", snap, err)
	}
}

func TestRecordValidate(t *testing.T) {
	good := Record{Node: "a", Addr: "10.0.0.1", Services: []Service{{ID: "x", Name: "x", Port: 1, Health: Passing}}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good record refused: %v", err)
	}
	bad := map[string]func(r *Record){
		"empty node":   func(r *Record) { r.Node = "" },
		"bad addr":     func(r *Record) { r.Addr = "nope" },
		"dup id":       func(r *Record) { r.Services = append(r.Services, r.Services[0]) },
		"port range":   func(r *Record) { r.Services[0].Port = 70000 },
		"bad health":   func(r *Record) { r.Services[0].Health = "fine" },
		"tunnel range": func(r *Record) { r.TunnelPort = -1 },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			r := good
			r.Services = append([]Service(nil), good.Services...)
			mutate(&r)
			if err := r.Validate(); err == nil {
				t.Fatal("bad record accepted")
			}
		})
	}
}
