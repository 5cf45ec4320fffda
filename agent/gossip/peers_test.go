package gossip

import (
	"hash/fnv"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
)

// The peer state machine, driven by a manual clock: every case is a list of
// named steps (an event, the clock moving, an expectation), so that a case
// reads as the story it tests.

var testTimeouts = peerTimeouts{
	reconnect:     72 * time.Hour,
	leftReconnect: 30 * time.Minute,
	tombstone:     24 * time.Hour,
	unknownRecord: 75 * time.Second,
}

const (
	suspicion     = 3 * time.Second // the suspicion window the cases use
	refusalWindow = time.Second     // how recent a refusal must be to count
)

type tableHarness struct {
	t     *testing.T
	clock *clock.Manual
	pt    *peerTable
	// The last notice a step produced, and its type.
	noticeType msgType
	notice     *notice
	fresh      bool
}

type step struct {
	name string
	do   func(h *tableHarness)
}

func (h *tableHarness) now() time.Time { return h.clock.Now() }

// node is a member called name at an address of its own.
func node(name string) *memberlist.Node {
	h := fnv.New32a()
	h.Write([]byte(name))
	s := h.Sum32()
	return &memberlist.Node{Name: name, Addr: net.IPv4(10, byte(s>>16), byte(s>>8), byte(s)), Port: 7946}
}

func noDelay(bool) time.Duration { return 0 }

// Events.

func join(name string, m nodeMeta) step {
	return step{"join " + name, func(h *tableHarness) { h.pt.observe(node(name), &m, evJoin, h.now(), noDelay) }}
}

func update(name string, m nodeMeta) step {
	return step{"update " + name, func(h *tableHarness) { h.pt.observe(node(name), &m, evUpdate, h.now(), noDelay) }}
}

func gone(name string, m nodeMeta) step {
	return step{"memberlist removes " + name, func(h *tableHarness) { h.pt.observe(node(name), &m, evLeave, h.now(), noDelay) }}
}

func record(name string, version uint64, leaving, server bool) step {
	return step{"record of " + name, func(h *tableHarness) {
		w := wireRecord{Record: catalog.Record{Node: name, Version: version, Addr: "10.0.0.1", Server: server}, Leaving: leaving}
		h.fresh = h.pt.applyRecord(&w, h.now())
	}}
}

func probeFails(name string) step {
	return step{"probe of " + name + " fails", func(h *tableHarness) {
		h.noticeType, h.notice = h.pt.probeFailed(name, h.now(), refusalWindow, suspicion)
	}}
}

func refused(name string) step {
	return step{"connection to " + name + " refused", func(h *tableHarness) {
		h.notice = h.pt.connectionRefused(name, h.now())
		h.noticeType = 0
		if h.notice != nil {
			h.noticeType = msgDown
		}
	}}
}

func noticeFrom(typ msgType, name string, epoch uint64) step {
	return step{typ.String() + " notice about " + name, func(h *tableHarness) {
		h.fresh = h.pt.applyNotice(typ, &notice{Node: name, Epoch: epoch, From: "other"}, h.now(), suspicion)
	}}
}

func probeOK(name string) step {
	return step{"probe of " + name + " answered", func(h *tableHarness) { h.pt.probeSucceeded(name) }}
}

func remembered(rs ...RememberedPeer) step {
	return step{"peers file read", func(h *tableHarness) { h.pt.remember(rs, h.now()) }}
}

func wait(d time.Duration) step {
	return step{"wait " + d.String(), func(h *tableHarness) { h.clock.Advance(d) }}
}

func reap() step {
	return step{"reap", func(h *tableHarness) { h.pt.reap(h.now()) }}
}

// Expectations.

func wantStatus(name string, want catalog.MemberStatus) step {
	return step{"want " + name + " " + string(want), func(h *tableHarness) {
		h.t.Helper()
		got := catalog.MemberStatus("")
		if p := h.pt.get(name); p != nil && p.known {
			got = p.status(h.now())
		}
		if got != want {
			h.t.Fatalf("status of %s = %q, want %q", name, got, want)
		}
	}}
}

func wantNotice(typ msgType) step {
	return step{"want a " + typ.String() + " notice", func(h *tableHarness) {
		h.t.Helper()
		if h.notice == nil || h.noticeType != typ {
			h.t.Fatalf("notice %v of type %s, want a %s notice", h.notice, h.noticeType, typ)
		}
	}}
}

func wantNoNotice() step {
	return step{"want no notice", func(h *tableHarness) {
		h.t.Helper()
		if h.notice != nil {
			h.t.Fatalf("notice %+v (%s), want none", h.notice, h.noticeType)
		}
	}}
}

func wantFresh(want bool) step {
	return step{"want news", func(h *tableHarness) {
		h.t.Helper()
		if h.fresh != want {
			h.t.Fatalf("applied/fresh = %v, want %v", h.fresh, want)
		}
	}}
}

func wantCandidates(names ...string) step {
	return step{"want reconnect candidates", func(h *tableHarness) {
		h.t.Helper()
		var got []string
		for _, n := range h.pt.reconnectCandidates(h.now()) {
			got = append(got, n.Name)
		}
		if !slices.Equal(got, names) {
			h.t.Fatalf("reconnect candidates %v, want %v", got, names)
		}
	}}
}

func wantContact(want bool) step {
	return step{"want contact", func(h *tableHarness) {
		h.t.Helper()
		if got := h.pt.inContact(h.now()); got != want {
			h.t.Fatalf("inContact = %v, want %v", got, want)
		}
	}}
}

func wantKept(name string, want bool) step {
	return step{"want " + name + " kept", func(h *tableHarness) {
		h.t.Helper()
		if got := h.pt.get(name) != nil; got != want {
			h.t.Fatalf("%s kept = %v, want %v", name, got, want)
		}
	}}
}

func TestPeerStateMachine(t *testing.T) {
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	m1 := nodeMeta{Version: 10, Epoch: 100}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a failed probe makes a suspect until the window passes", []step{
			join("a", m1), wantStatus("a", catalog.StatusAlive),
			probeFails("a"), wantNotice(msgSuspect), wantStatus("a", catalog.StatusSuspect),
			wait(suspicion - time.Millisecond), wantStatus("a", catalog.StatusSuspect),
			wait(time.Millisecond), wantStatus("a", catalog.StatusAlive),
		}},
		{"an answered probe ends a suspicion", []step{
			join("a", m1), probeFails("a"), wantStatus("a", catalog.StatusSuspect),
			probeOK("a"), wantStatus("a", catalog.StatusAlive),
		}},
		{"a failed probe just after a refused connection is a dead agent", []step{
			join("a", m1), refused("a"), wantNoNotice(),
			wait(refusalWindow), probeFails("a"), wantNotice(msgDown), wantStatus("a", catalog.StatusFailed),
			// Held down however long it takes memberlist to agree.
			wait(time.Hour), wantStatus("a", catalog.StatusFailed),
		}},
		{"a refusal older than the window is only a suspicion", []step{
			join("a", m1), refused("a"),
			wait(refusalWindow + time.Millisecond), probeFails("a"), wantNotice(msgSuspect),
			wantStatus("a", catalog.StatusSuspect),
		}},
		{"a refusal during a suspicion is a dead agent", []step{
			join("a", m1), probeFails("a"), wait(time.Second),
			refused("a"), wantNotice(msgDown), wantStatus("a", catalog.StatusFailed),
		}},
		{"a refusal after the suspicion expired is nothing", []step{
			join("a", m1), probeFails("a"), wait(suspicion),
			refused("a"), wantNoNotice(), wantStatus("a", catalog.StatusAlive),
		}},
		{"a down notice about an older epoch is stale", []step{
			join("a", m1), noticeFrom(msgDown, "a", m1.Epoch-1), wantFresh(false),
			wantStatus("a", catalog.StatusAlive),
		}},
		{"a down notice holds a member down until a newer epoch refutes it", []step{
			join("a", m1), noticeFrom(msgDown, "a", m1.Epoch), wantFresh(true),
			wantStatus("a", catalog.StatusFailed),
			noticeFrom(msgDown, "a", m1.Epoch), wantFresh(false), // not news: not passed on again
			update("a", nodeMeta{Version: 10, Epoch: m1.Epoch + 1}), wantStatus("a", catalog.StatusAlive),
			// The old notice, arriving late, no longer applies.
			noticeFrom(msgDown, "a", m1.Epoch), wantFresh(false), wantStatus("a", catalog.StatusAlive),
		}},
		{"a suspect notice at the same epoch is news once per window", []step{
			join("a", m1), noticeFrom(msgSuspect, "a", m1.Epoch), wantFresh(true),
			noticeFrom(msgSuspect, "a", m1.Epoch), wantFresh(false),
			wait(suspicion), wantStatus("a", catalog.StatusAlive),
			noticeFrom(msgSuspect, "a", m1.Epoch), wantFresh(true), wantStatus("a", catalog.StatusSuspect),
		}},
		{"gone with the leaving flag is left, without it failed", []step{
			join("a", m1), join("b", m1),
			update("a", nodeMeta{Version: 11, Epoch: 100, Leaving: true}), wantStatus("a", catalog.StatusLeft),
			gone("a", nodeMeta{Version: 11, Epoch: 100, Leaving: true}), wantStatus("a", catalog.StatusLeft),
			gone("b", m1), wantStatus("b", catalog.StatusFailed),
		}},
		{"a leaving record that arrives after the departure still makes it left", []step{
			join("a", m1), gone("a", m1), wantStatus("a", catalog.StatusFailed),
			record("a", 11, true, false), wantFresh(true), wantStatus("a", catalog.StatusLeft),
		}},
		{"an older record is not applied", []step{
			record("a", 11, false, false), wantFresh(true),
			record("a", 11, false, false), wantFresh(false),
			record("a", 9, true, false), wantFresh(false),
		}},
		{"a member back with a newer epoch is alive again and no longer retried", []step{
			join("a", m1), gone("a", nodeMeta{Version: 11, Epoch: 100, Leaving: true}),
			record("a", 11, true, false), wantStatus("a", catalog.StatusLeft), wantCandidates("a"),
			join("a", nodeMeta{Version: 20, Epoch: 200}), wantStatus("a", catalog.StatusAlive),
			wantCandidates(),
		}},
		{"a failed member is retried and kept until ReconnectTimeout", []step{
			join("a", m1), gone("a", m1), wantCandidates("a"),
			wait(testTimeouts.reconnect - time.Second), reap(), wantCandidates("a"), wantKept("a", true),
			wait(2 * time.Second), wantCandidates(), reap(), wantKept("a", false),
		}},
		{"a left member is retried for LeftReconnectTimeout and kept until TombstoneTimeout", []step{
			join("a", nodeMeta{Version: 10, Epoch: 100, Leaving: true}), gone("a", nodeMeta{Version: 10, Epoch: 100, Leaving: true}),
			wantCandidates("a"),
			wait(testTimeouts.leftReconnect - time.Second), wantCandidates("a"),
			wait(2 * time.Second), wantCandidates(), reap(), wantStatus("a", catalog.StatusLeft),
			wait(testTimeouts.tombstone), reap(), wantKept("a", false),
		}},
		{"a record of a node memberlist never reported is forgotten", []step{
			record("x", 5, false, false), wantStatus("x", ""), wantCandidates(),
			wait(testTimeouts.unknownRecord), reap(), wantKept("x", true),
			wait(time.Second), reap(), wantKept("x", false),
		}},
		{"remembered peers are retried, not shown, and forgotten after their window", []step{
			remembered(
				RememberedPeer{Name: "s1", Addr: "10.0.0.1", Port: 7946, Server: true, Status: catalog.StatusAlive, Since: start.Add(-time.Hour)},
				RememberedPeer{Name: "c1", Addr: "10.0.0.2", Port: 7946, Status: catalog.StatusLeft, Since: start.Add(-20 * time.Minute)},
				RememberedPeer{Name: "c2", Addr: "10.0.0.3", Port: 7946, Status: catalog.StatusFailed, Since: start.Add(-71 * time.Hour)},
			),
			wantStatus("s1", ""), wantCandidates("c1", "c2", "s1"),
			// c1 left 20 min ago: 10 min of its window remain.
			wait(10 * time.Minute), wantCandidates("c2", "s1"),
			// c2 failed 71 h before the start; s1 was alive when the file was
			// written, so its window counts from this start.
			wait(time.Hour), reap(), wantKept("c2", false), wantCandidates("s1"),
			wait(testTimeouts.reconnect), reap(), wantKept("s1", false), wantCandidates(),
		}},
		{"a remembered peer that memberlist reports becomes a member", []step{
			remembered(RememberedPeer{Name: "a", Addr: "10.0.0.1", Port: 7946, Status: catalog.StatusAlive, Since: start}),
			join("a", m1), wantStatus("a", catalog.StatusAlive), wantCandidates(),
		}},
		{"no live peer is no contact", []step{
			wantContact(false),
			join("c", m1), wantContact(true),
			gone("c", m1), wantContact(false),
		}},
		{"clients without any live server are not in contact", []step{
			join("c", m1), join("s", nodeMeta{Version: 10, Epoch: 100, Server: true}), wantContact(true),
			gone("s", nodeMeta{Version: 10, Epoch: 100, Server: true}), wantContact(false),
			// A server gone for good stops counting when its window ends.
			wait(testTimeouts.reconnect), wantContact(true),
		}},
		{"a server that left counts for LeftReconnectTimeout", []step{
			join("c", m1), join("s", nodeMeta{Version: 10, Epoch: 100, Server: true, Leaving: true}),
			gone("s", nodeMeta{Version: 10, Epoch: 100, Server: true, Leaving: true}), wantContact(false),
			wait(testTimeouts.leftReconnect), wantContact(true),
		}},
		{"one live server is enough, however many are gone", []step{
			join("c", m1),
			join("s1", nodeMeta{Version: 10, Epoch: 100, Server: true}),
			join("s2", nodeMeta{Version: 10, Epoch: 100, Server: true}),
			join("s3", nodeMeta{Version: 10, Epoch: 100, Server: true}),
			gone("s1", nodeMeta{Version: 10, Epoch: 100, Server: true}),
			gone("s2", nodeMeta{Version: 10, Epoch: 100, Server: true}), wantContact(true),
			noticeFrom(msgDown, "s3", 100), wantContact(false),
		}},
		{"remembered servers count until a live server is found", []step{
			remembered(RememberedPeer{Name: "s", Addr: "10.0.0.1", Port: 7946, Server: true, Status: catalog.StatusAlive, Since: start}),
			join("c", m1), wantContact(false),
			join("s", nodeMeta{Version: 10, Epoch: 100, Server: true}), wantContact(true),
		}},
		{"a server's record says it is a server before its meta does", []step{
			join("c", m1), join("s", m1), record("s", 10, false, true),
			gone("s", m1), wantContact(false),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &tableHarness{t: t, clock: clock.NewManual(start), pt: newPeerTable("self", testTimeouts)}
			for i, s := range tc.steps {
				t.Logf("step %d: %s", i, s.name)
				s.do(h)
			}
		})
	}
}

func TestPeerTableCountsAlive(t *testing.T) {
	pt := newPeerTable("self", testTimeouts)
	now := time.Unix(0, 0)
	pt.observe(node("a"), &nodeMeta{Epoch: 1}, evJoin, now, noDelay)
	pt.observe(node("a"), &nodeMeta{Epoch: 1}, evUpdate, now, noDelay)
	pt.observe(node("b"), &nodeMeta{Epoch: 1}, evJoin, now, noDelay)
	if n := pt.numAlive.Load(); n != 2 {
		t.Fatalf("numAlive = %d after two joins and an update, want 2", n)
	}
	pt.observe(node("a"), &nodeMeta{Epoch: 1}, evLeave, now, noDelay)
	pt.observe(node("a"), &nodeMeta{Epoch: 1}, evLeave, now, noDelay)
	if n := pt.numAlive.Load(); n != 1 {
		t.Fatalf("numAlive = %d after a repeated leave, want 1", n)
	}
}

func TestDuePullsAreBoundedAndRescheduled(t *testing.T) {
	clk := clock.NewManual(time.Unix(1000, 0))
	pt := newPeerTable("self", testTimeouts)
	delay := func(bool) time.Duration { return time.Second }
	for _, n := range []string{"a", "b", "c"} {
		pt.observe(node(n), &nodeMeta{Version: 10, Epoch: 1}, evJoin, clk.Now(), delay)
	}
	if got := pt.duePulls(clk.Now(), 2, func() time.Duration { return time.Second }); len(got) != 0 {
		t.Fatalf("%d pulls before the delay passed, want 0", len(got))
	}
	clk.Advance(time.Second)
	first := pt.duePulls(clk.Now(), 2, func() time.Duration { return time.Second })
	if len(first) != 2 {
		t.Fatalf("%d pulls due, want the limit of 2", len(first))
	}
	for _, p := range first {
		if p.req.From != "self" || p.req.Have != 0 || p.req.Node != p.to.Name {
			t.Fatalf("pull %+v, want self asking the owner for its record from version 0", p)
		}
	}
	rest := pt.duePulls(clk.Now(), 2, func() time.Duration { return time.Second })
	if len(rest) != 1 {
		t.Fatalf("%d pulls on the next tick, want the 1 left", len(rest))
	}
	// A record that arrives cancels its pull.
	w := wireRecord{Record: catalog.Record{Node: rest[0].to.Name, Version: 10, Addr: "10.0.0.1"}}
	pt.applyRecord(&w, clk.Now())
	clk.Advance(time.Second)
	for _, p := range pt.duePulls(clk.Now(), 10, func() time.Duration { return time.Second }) {
		if p.to.Name == w.Record.Node {
			t.Fatalf("pulled %s although its record arrived", p.to.Name)
		}
	}
}

func TestRememberableOrderAndLimit(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	pt := newPeerTable("self", testTimeouts)
	pt.observe(node("c-alive"), &nodeMeta{Epoch: 1}, evJoin, now, noDelay)
	pt.observe(node("c-gone-early"), &nodeMeta{Epoch: 1}, evJoin, now.Add(-2*time.Hour), noDelay)
	pt.observe(node("c-gone-early"), &nodeMeta{Epoch: 1}, evLeave, now.Add(-2*time.Hour), noDelay)
	pt.observe(node("c-gone-late"), &nodeMeta{Epoch: 1}, evJoin, now.Add(-time.Hour), noDelay)
	pt.observe(node("c-gone-late"), &nodeMeta{Epoch: 1}, evLeave, now.Add(-time.Hour), noDelay)
	pt.observe(node("s-gone"), &nodeMeta{Epoch: 1, Server: true}, evJoin, now.Add(-3*time.Hour), noDelay)
	pt.observe(node("s-gone"), &nodeMeta{Epoch: 1, Server: true}, evLeave, now.Add(-3*time.Hour), noDelay)
	// Left more than LeftReconnectTimeout ago: no longer worth remembering.
	pt.observe(node("c-left"), &nodeMeta{Epoch: 1, Leaving: true}, evJoin, now.Add(-time.Hour), noDelay)
	pt.observe(node("c-left"), &nodeMeta{Epoch: 1, Leaving: true}, evLeave, now.Add(-time.Hour), noDelay)
	// A record without an address memberlist gave: nothing to dial.
	pt.applyRecord(&wireRecord{Record: catalog.Record{Node: "unknown", Version: 1, Addr: "10.0.0.9"}}, now)

	got := pt.rememberable(now, 10)
	var names []string
	for _, r := range got {
		names = append(names, r.Name+":"+string(r.Status))
	}
	want := []string{"s-gone:failed", "c-alive:alive", "c-gone-late:failed", "c-gone-early:failed"}
	if !slices.Equal(names, want) {
		t.Fatalf("remembered %v, want %v (servers, live, most recently gone)", names, want)
	}
	if !got[0].Server || !got[0].Since.Equal(now.Add(-3*time.Hour)) || !got[1].Since.Equal(now) {
		t.Fatalf("remembered %+v: want the server flag, the departure time of gone members and now for live ones", got)
	}
	if l := pt.rememberable(now, 2); len(l) != 2 || l[0].Name != "s-gone" {
		t.Fatalf("limited to 2: %+v", l)
	}

	// What is written is what is read back, and a restarted node's table
	// tries the same peers.
	b := encodePeersFile("self", got)
	back, err := parsePeersFile(b, "self")
	if err != nil {
		t.Fatal(err)
	}
	pt2 := newPeerTable("self", testTimeouts)
	pt2.remember(back, now.Add(time.Minute))
	var cands []string
	for _, n := range pt2.reconnectCandidates(now.Add(time.Minute)) {
		cands = append(cands, n.Name)
	}
	if peersSignature(got) == peersSignature(pt2.rememberable(now.Add(time.Minute), 10)) {
		// c-alive is now a remembered peer, gone since the restart: a change
		// that the next write must record.
		t.Fatal("the signature did not change although c-alive is no longer known alive")
	}
}
