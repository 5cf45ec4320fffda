package catalog

import (
	"slices"
	"testing"
	"time"
)

// member is a node with one passing service named after it.
func member(node string, version uint64, status MemberStatus, svc string) Member {
	m := Member{Status: status, Record: Record{Node: node, Version: version, Addr: "10.0.0.1"}}
	if svc != "" {
		m.Services = []Service{{ID: svc, Name: svc, Port: 80, Health: Passing}}
	}
	return m
}

// view describes a snapshot as node=status:services, sorted by node.
func view(s *Snapshot) []string {
	var out []string
	for _, m := range s.Members() {
		d := m.Node + "=" + string(m.Status) + ":"
		for _, svc := range m.Services {
			d += svc.Name
		}
		out = append(out, d)
	}
	return out
}

// TestRestoreOverlay pins the rules of Store.Restore: the publisher's
// record wins, a node it knows by name only keeps the restored record
// with the publisher's status, and a node it does not know is kept.
func TestRestoreOverlay(t *testing.T) {
	savedAt := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)
	restored := func() []Member {
		return []Member{
			member("a", 5, StatusAlive, "old-a"),
			member("b", 5, StatusAlive, "web"),
			member("c", 5, StatusAlive, "db"),
			member("d", 5, StatusAlive, "api"),
		}
	}
	tests := []struct {
		name      string
		published []Member
		want      []string
	}{
		{"nothing published", nil,
			[]string{"a=alive:old-a", "b=alive:web", "c=alive:db", "d=alive:api"}},
		{"the publisher's record wins", []Member{member("a", 9, StatusAlive, "new-a"), member("b", 6, StatusAlive, "")},
			[]string{"a=alive:new-a", "b=alive:", "c=alive:db", "d=alive:api"}},
		{"known by name only: restored record, publisher's status", []Member{member("A", 9, StatusAlive, ""), member("C", 0, StatusFailed, "")},
			[]string{"A=alive:", "b=alive:web", "c=failed:db", "d=alive:api"}},
		{"a node only the publisher knows", []Member{member("e", 1, StatusAlive, "cache")},
			[]string{"a=alive:old-a", "b=alive:web", "c=alive:db", "d=alive:api", "e=alive:cache"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore()
			s.Publish(tt.published)
			snap := s.Restore(restored(), savedAt)
			if got := view(snap); !slices.Equal(got, tt.want) {
				t.Fatalf("after Restore: %v, want %v", got, tt.want)
			}
			if !snap.RestoredAt().Equal(savedAt) {
				t.Fatalf("RestoredAt %v, want %v", snap.RestoredAt(), savedAt)
			}
			// A later Publish is merged by the same rules.
			again := s.Publish(slices.Clone(tt.published))
			if got := view(again); !slices.Equal(got, tt.want) || again.Index() <= snap.Index() {
				t.Fatalf("Publish during the restore: %v at %d, want %v after %d", got, again.Index(), tt.want, snap.Index())
			}
		})
	}
}

// TestEndRestoreLeavesThePublishersView: once the restore ends, the
// snapshot is the last Publish alone, at once and at a higher index, and a
// second EndRestore does nothing.
func TestEndRestoreLeavesThePublishersView(t *testing.T) {
	s := NewStore()
	if s.EndRestore() {
		t.Fatal("EndRestore with nothing restored reports a restore")
	}
	s.Restore([]Member{member("b", 5, StatusAlive, "web"), member("c", 5, StatusAlive, "db")}, time.Now())
	s.Publish([]Member{member("a", 1, StatusAlive, ""), member("b", 7, StatusAlive, "")})
	_, changed := s.Watch()
	before := s.Current().Index()
	if !s.EndRestore() {
		t.Fatal("EndRestore did not report the restore it ended")
	}
	select {
	case <-changed:
	default:
		t.Fatal("EndRestore woke no watcher")
	}
	cur := s.Current()
	if got, want := view(cur), []string{"a=alive:", "b=alive:"}; !slices.Equal(got, want) {
		t.Fatalf("after EndRestore: %v, want %v", got, want)
	}
	if !cur.RestoredAt().IsZero() || cur.Index() <= before {
		t.Fatalf("after EndRestore: RestoredAt %v, index %d (was %d)", cur.RestoredAt(), cur.Index(), before)
	}
	if cur.HasService("db") || cur.HasService("web") {
		t.Fatal("a restored service outlived the restore")
	}
	if s.EndRestore() {
		t.Fatal("a second EndRestore reports a restore")
	}
	// Restore and end it again: the publisher's view is intact.
	s.Restore([]Member{member("z", 1, StatusAlive, "x")}, time.Now())
	s.EndRestore()
	if got, want := view(s.Current()), []string{"a=alive:", "b=alive:"}; !slices.Equal(got, want) {
		t.Fatalf("after a second restore: %v, want %v", got, want)
	}
}
