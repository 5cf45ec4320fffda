package catalogstate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/catalog"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func sampleMembers() []catalog.Member {
	return []catalog.Member{
		{Status: catalog.StatusAlive, Record: catalog.Record{Node: "a", Version: 7, Addr: "10.0.0.1", TunnelPort: 7948,
			Meta: map[string]string{"raft_port": "7947"}, Server: true,
			Services: []catalog.Service{{ID: "web-1", Name: "web", Port: 8080, Tags: []string{"v1"}, Health: catalog.Passing,
				Ports: []catalog.Port{{Name: "admin", Port: 9090}}, Meta: map[string]string{"team": "x"}}}}},
		{Status: catalog.StatusFailed, Record: catalog.Record{Node: "b", Version: 3, Addr: "10.0.0.2",
			Services: []catalog.Service{{ID: "db", Name: "db", Address: "10.0.1.2", Port: 5432, Health: catalog.Critical}}}},
		{Status: catalog.StatusAlive, Record: catalog.Record{Node: "c", Addr: "10.0.0.3"}}, // known by name only
	}
}

func testConfig(t *testing.T) Config {
	t.Helper()
	return Config{Path: filepath.Join(t.TempDir(), FileName), Node: "a"}
}

func TestRoundTrip(t *testing.T) {
	cfg := testConfig(t)
	in := State{Node: "a", SavedAt: t0, Members: sampleMembers()}
	n, err := Write(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.Path); err != nil || fi.Size() != int64(n) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file %v (%v), want %d bytes, mode 0600", fi, err, n)
	}
	out, err := Read(cfg, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !out.SavedAt.Equal(in.SavedAt) || out.Node != in.Node || !reflect.DeepEqual(out.Members, in.Members) {
		t.Fatalf("read back %+v\nwant %+v", out, in)
	}
}

// TestWriteReplacesAtomically: a second write replaces the whole file,
// and leaves no temporary file beside it.
func TestWriteReplacesAtomically(t *testing.T) {
	cfg := testConfig(t)
	if _, err := Write(cfg, State{Node: "a", SavedAt: t0, Members: sampleMembers()}); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(cfg, State{Node: "a", SavedAt: t0.Add(time.Second), Members: sampleMembers()[:1]}); err != nil {
		t.Fatal(err)
	}
	out, err := Read(cfg, t0.Add(time.Minute))
	if err != nil || len(out.Members) != 1 || !out.SavedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("after the second write: %d members saved at %v, %v", len(out.Members), out.SavedAt, err)
	}
	entries, err := os.ReadDir(filepath.Dir(cfg.Path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want the file alone", entries, err)
	}
}

// TestReadRefuses: every file that must not be used is refused with the
// error that says why, and never panics.
func TestReadRefuses(t *testing.T) {
	valid, err := Encode(State{Node: "a", SavedAt: t0, Members: sampleMembers()}, DefaultMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		content []byte // nil: no file
		now     time.Time
		maxSize int
		want    error
		reason  string
	}{
		{"missing", nil, t0, 0, os.ErrNotExist, ""},
		{"empty", []byte{}, t0, 0, ErrInvalid, "not a catalog state"},
		{"truncated", valid[:len(valid)/2], t0, 0, ErrInvalid, "not a catalog state"},
		{"garbage", []byte("\x00\xff{{"), t0, 0, ErrInvalid, "not a catalog state"},
		{"two documents", append(bytes.Clone(valid), valid...), t0, 0, ErrInvalid, "data after the document"},
		{"unknown field", []byte(`{"format":"meshwork-catalog/1","node":"a","saved_at":"2026-12-07T12:00:00Z","members":[],"extra":1}`), t0, 0, ErrInvalid, "unknown field"},
		{"another format", []byte(`{"format":"meshwork-catalog/2","node":"a","saved_at":"2026-12-07T12:00:00Z","members":[]}`), t0, 0, ErrForeign, `format "meshwork-catalog/2"`},
		{"another node", bytes.Replace(valid, []byte(`"node":"a"`), []byte(`"node":"z"`), 1), t0, 0, ErrForeign, `written by node "z"`},
		{"no time", []byte(`{"format":"meshwork-catalog/1","node":"a","members":[]}`), t0, 0, ErrInvalid, "saved_at is missing"},
		{"bad address", bytes.Replace(valid, []byte(`"10.0.0.2"`), []byte(`"ten"`), 1), t0, 0, ErrInvalid, `members[1]: catalog: record "b": addr "ten"`},
		{"bad status", bytes.Replace(valid, []byte(`"failed"`), []byte(`"gone"`), 1), t0, 0, ErrInvalid, `status "gone" is unknown`},
		{"node twice", []byte(`{"format":"meshwork-catalog/1","node":"a","saved_at":"2026-12-07T12:00:00Z","members":[{"node":"x","version":1,"addr":"10.0.0.1","status":"alive"},{"node":"X","version":1,"addr":"10.0.0.1","status":"alive"}]}`), t0, 0, ErrInvalid, "listed twice"},
		{"too old", valid, t0.Add(DefaultMaxAge + time.Second), 0, ErrTooOld, "saved 10m1s ago, more than 10m0s"},
		{"from the future", valid, t0.Add(-time.Hour), 0, ErrTooOld, "in the future"},
		{"too large", valid, t0, len(valid) - 1, ErrTooLarge, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MaxSize = tt.maxSize
			if tt.content != nil {
				if err := os.WriteFile(cfg.Path, tt.content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Read(cfg, tt.now)
			if !errors.Is(err, ErrFile) || !errors.Is(err, tt.want) {
				t.Fatalf("Read: %v, want %v wrapped in %v", err, tt.want, ErrFile)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("Read: %q does not say %q", err, tt.reason)
			}
			if errors.Is(err, ErrTooOld) != !s.SavedAt.IsZero() {
				t.Fatalf("Read: state %+v with %v; want it with ErrTooOld only", s, err)
			}
		})
	}
}

// TestFreshEnoughAtTheBound: a file exactly MaxAge old, or a little in
// the future (clocks move), is still used.
func TestFreshEnoughAtTheBound(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxAge = time.Minute
	if _, err := Write(cfg, State{Node: "a", SavedAt: t0, Members: sampleMembers()}); err != nil {
		t.Fatal(err)
	}
	for _, now := range []time.Time{t0.Add(time.Minute), t0.Add(-30 * time.Second)} {
		if _, err := Read(cfg, now); err != nil {
			t.Errorf("at %v: %v", now.Sub(t0), err)
		}
	}
}

// TestWriteTooLarge: a catalog over MaxSize is not written, and the file
// already there is kept.
func TestWriteTooLarge(t *testing.T) {
	cfg := testConfig(t)
	if _, err := Write(cfg, State{Node: "a", SavedAt: t0, Members: sampleMembers()[:1]}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(cfg.Path)
	cfg.MaxSize = len(before) + 10
	_, err := Write(cfg, State{Node: "a", SavedAt: t0.Add(time.Second), Members: sampleMembers()})
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrFile) {
		t.Fatalf("Write: %v, want ErrTooLarge", err)
	}
	if after, _ := os.ReadFile(cfg.Path); !bytes.Equal(before, after) {
		t.Fatal("a refused write changed the file")
	}
}

func FuzzDecode(f *testing.F) {
	valid, err := Encode(State{Node: "a", SavedAt: t0, Members: sampleMembers()}, DefaultMaxSize)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"format":"meshwork-catalog/1","node":"a","saved_at":"2026-12-07T12:00:00Z","members":null}`))
	f.Add([]byte(`{"format":"meshwork-catalog/1","node":"a","saved_at":"2026-12-07T12:00:00Z","members":[{"node":"x","version":1,"addr":"::1","status":"suspect","services":[{"id":"s","name":"s","port":1,"ports":[{"name":"p","port":2}],"health":"warning"}]}]}`))
	f.Add([]byte(`{"members":[{"services":[{}]}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrForeign) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrForeign", err)
			}
			return
		}
		// What decodes is safe to publish: a snapshot builds from it, and
		// it survives a round trip.
		snap := catalog.NewSnapshot(1, append([]catalog.Member(nil), s.Members...))
		if len(snap.Members()) != len(s.Members) {
			t.Fatalf("%d members decoded, %d in the snapshot", len(s.Members), len(snap.Members()))
		}
		enc, err := Encode(s, DefaultMaxSize)
		if err != nil {
			t.Fatalf("encode what decoded: %v", err)
		}
		back, err := Decode(enc)
		if err != nil || len(back.Members) != len(s.Members) {
			t.Fatalf("round trip: %d members, %v; want %d", len(back.Members), err, len(s.Members))
		}
	})
}
