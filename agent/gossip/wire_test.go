package gossip

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/catalog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// counter reads the value of a counter.
func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func sampleRecord() catalog.Record {
	return catalog.Record{
		Node: "node-a", Version: 42, Addr: "10.0.0.1", TunnelPort: 7948, Server: true,
		Meta: map[string]string{"raft_port": "7947"},
		Services: []catalog.Service{{
			ID: "web-1", Name: "web", Port: 8080, Tags: []string{"v1"},
			Ports: []catalog.Port{{Name: "admin", Port: 9090}},
			Meta:  map[string]string{"team": "edge"}, Health: catalog.Passing,
		}},
	}
}

// seedMessages returns one valid encoding of every message type.
func seedMessages(t testing.TB) [][]byte {
	key := make([]byte, 32)
	return [][]byte{
		mustEncode(msgRecord, &wireRecord{Record: sampleRecord()}),
		mustEncode(msgRecord, &wireRecord{Record: sampleRecord(), Leaving: true, From: "node-b", Fwd: true}),
		mustEncode(msgPull, &pullRequest{From: "node-b", Node: "node-a", Have: 3}),
		mustEncode(msgSuspect, &notice{Node: "node-a", Epoch: 9, From: "node-b"}),
		mustEncode(msgDown, &notice{Node: "node-a", Epoch: 9, From: "node-b"}),
		mustEncode(msgQuery, &query{ID: 7, Origin: "node-b", Op: opInstall, Key: key}),
		mustEncode(msgQuery, &query{ID: 8, Origin: "node-b", Op: opList}),
		mustEncode(msgQueryResp, &queryResp{ID: 7, Node: "node-a", Keys: [][]byte{key}, Primary: key}),
		mustEncode(msgState, &pushState{Records: []wireRecord{{Record: sampleRecord()}}}),
	}
}

func TestDecodeMessageRoundTrip(t *testing.T) {
	for _, b := range seedMessages(t) {
		m, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("decode %s: %v", msgType(b[0]), err)
		}
		if m.Type != msgType(b[0]) {
			t.Fatalf("type %s, want %s", m.Type, msgType(b[0]))
		}
	}
	m, _ := decodeMessage(seedMessages(t)[1])
	got := m.Record
	want := sampleRecord()
	if got.Record.Node != want.Node || got.Record.Version != want.Version || !got.Leaving || got.From != "node-b" || !got.Fwd ||
		len(got.Record.Services) != 1 || got.Record.Services[0].Ports[0].Port != 9090 || got.Record.Meta["raft_port"] != "7947" {
		t.Fatalf("record round trip: %+v", got)
	}
}

func TestRecordMessageIsCompact(t *testing.T) {
	b := mustEncode(msgRecord, &wireRecord{Record: sampleRecord()})
	// One service with tags, meta and a named port: far below a packet.
	if len(b) > 200 {
		t.Fatalf("a one-service record encodes to %d bytes, want at most 200", len(b))
	}
}

func TestDecodeMessageRefusesBadInput(t *testing.T) {
	bad := sampleRecord()
	bad.Addr = "not-an-ip"
	dup := sampleRecord()
	dup.Services = append(dup.Services, dup.Services[0])
	zero := sampleRecord()
	zero.Version = 0
	huge := sampleRecord()
	huge.Version = math.MaxUint64
	slash := sampleRecord()
	slash.Node = "a/b"
	tests := []struct {
		name    string
		in      []byte
		invalid bool // decodes, but its content is refused
		want    string
	}{
		{"empty", nil, false, "empty"},
		{"unknown type", []byte{99, 0x80}, false, "unknown type 99"},
		{"truncated", mustEncode(msgRecord, &wireRecord{Record: sampleRecord()})[:20], false, "record"},
		{"not msgpack", append([]byte{byte(msgPull)}, []byte("hello, world")...), false, "pull"},
		{"bad address", mustEncode(msgRecord, &wireRecord{Record: bad}), true, `addr "not-an-ip"`},
		{"duplicate service", mustEncode(msgRecord, &wireRecord{Record: dup}), true, "duplicated"},
		{"version zero", mustEncode(msgRecord, &wireRecord{Record: zero}), true, "version is 0"},
		{"version past the clock", mustEncode(msgRecord, &wireRecord{Record: huge}), true, "past the clock's range"},
		{"epoch past the clock", mustEncode(msgDown, &notice{Node: "a", From: "b", Epoch: math.MaxUint64}), true, "past the clock's range"},
		{"slash in name", mustEncode(msgRecord, &wireRecord{Record: slash}), true, `"a/b"`},
		{"pull without node", mustEncode(msgPull, &pullRequest{From: "x"}), true, "empty node name"},
		{"short key", mustEncode(msgQuery, &query{ID: 1, Origin: "x", Op: opUse, Key: []byte{1, 2}}), true, "key of 2 bytes"},
		{"unknown op", mustEncode(msgQuery, &query{ID: 1, Origin: "x", Op: "format-disk"}), true, `unknown operation "format-disk"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeMessage(tc.in)
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !errors.Is(err, ErrBadMessage) || errors.Is(err, errInvalid) != tc.invalid || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want ErrBadMessage, invalid=%v, containing %q", err, tc.invalid, tc.want)
			}
		})
	}
}

// TestBadRecordsAreRefused feeds a member bad messages, as a buggy or hostile
// peer would send them: none reaches the catalog, each is counted and logged.
func TestBadRecordsAreRefused(t *testing.T) {
	store := catalog.NewStore()
	reg := prometheus.NewRegistry()
	var logs strings.Builder
	g, err := New(FastTestConfig("self"), Deps{
		Store: store, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := sampleRecord()
	bad.Services[0].Health = "fine"
	state := pushState{Records: []wireRecord{{Record: bad}, {Record: sampleRecord()}}}
	g.handleMessage(mustEncode(msgRecord, &wireRecord{Record: bad}))
	g.handleMessage([]byte{byte(msgRecord), 0xc1})
	g.mergeState(&state)

	if got := counter(t, g.metrics.refused.WithLabelValues(refusedInvalid)); got != 2 {
		t.Fatalf("refused{invalid} = %v, want 2", got)
	}
	if got := counter(t, g.metrics.refused.WithLabelValues(refusedDecode)); got != 1 {
		t.Fatalf("refused{decode} = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), `health \"fine\" is unknown`) {
		t.Fatalf("the refusal is not logged with its reason:\n%s", logs.String())
	}
	// The good record of the state was kept (held until memberlist reports
	// its node), the bad one nowhere.
	g.mu.Lock()
	p := g.peers.get("node-a")
	g.mu.Unlock()
	if p == nil || p.rec == nil || p.rec.Services[0].Health != catalog.Passing {
		t.Fatalf("the valid record of the state was not kept: %+v", p)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, b := range seedMessages(f) {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(msgState), 0xdd, 0xff, 0xff, 0xff, 0xff}) // array claiming 4G items
	f.Add([]byte{byte(msgRecord), 0x81, 0xa1, 'r', 0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error %v does not wrap ErrBadMessage", err)
			}
			return
		}
		if m.Type == msgRecord {
			if err := m.Record.Record.Validate(); err != nil {
				t.Fatalf("accepted an invalid record: %v", err)
			}
		}
		// Whatever was accepted must survive a round trip.
		var v any
		switch m.Type {
		case msgRecord:
			v = m.Record
		case msgPull:
			v = m.Pull
		case msgSuspect, msgDown:
			v = m.Notice
		case msgQuery:
			v = m.Query
		case msgQueryResp:
			v = m.Resp
		case msgState:
			v = m.State
		}
		again, err := decodeMessage(mustEncode(m.Type, v))
		if err != nil || again.Type != m.Type {
			t.Fatalf("re-encoded %s does not decode: %v", m.Type, err)
		}
		// And a member must take it without panicking.
		g, err := New(FastTestConfig("self"), Deps{Store: catalog.NewStore(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		g.state = stateRunning
		if m.Type != msgQuery { // a query would be answered over the network
			g.handleMessage(b)
		}
	})
}

func TestDecodeMeta(t *testing.T) {
	m := nodeMeta{Version: 1 << 62, Epoch: 1 << 61, Server: true, Leaving: true}
	b := encodeMeta(&m)
	if len(b) > 64 {
		t.Fatalf("meta is %d bytes, want a few dozen", len(b))
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("meta round trip: %+v, %v", got, err)
	}
	if _, err := decodeMeta([]byte{0xc1}); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("bad meta: error %v, want ErrBadMessage", err)
	}
}
