package history

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// step is one operation of a scripted history, run in order by one client:
// the recorder's clock orders them as the script does.
type step func(r *Recorder)

func write(client int, key, value string, o Outcome) step {
	return func(r *Recorder) { r.Write(client, key, value).Done(o) }
}

func read(client int, key string, found bool, value string) step {
	return func(r *Recorder) { r.Read(client, key).Answer(found, value) }
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		ok    bool
	}{
		{"read of a missing key", []step{read(0, "a", false, "")}, true},
		{"read sees the acknowledged write", []step{write(0, "a", "1", OK), read(1, "a", true, "1")}, true},
		{"acknowledged write lost", []step{write(0, "a", "1", OK), read(1, "a", false, "")}, false},
		{"stale read after a newer write", []step{write(0, "a", "1", OK), write(0, "a", "2", OK), read(1, "a", true, "1")}, false},
		{"read of a value never written", []step{read(0, "a", true, "x")}, false},
		{"failed write never seen", []step{write(0, "a", "1", OK), write(0, "a", "2", Failed), read(1, "a", true, "1")}, true},
		{"failed write that took effect", []step{write(0, "a", "1", OK), write(0, "a", "2", Failed), read(1, "a", true, "2")}, false},
		{"unknown write seen later", []step{write(0, "a", "1", Unknown), read(1, "a", false, ""), read(1, "a", true, "1")}, true},
		{"unknown write never seen", []step{write(0, "a", "1", Unknown), read(1, "a", false, "")}, true},
		{"unknown write seen, then unseen", []step{write(0, "a", "1", Unknown), read(1, "a", true, "1"), read(1, "a", false, "")}, false},
		{"keys are independent", []step{write(0, "a", "1", OK), write(0, "b", "2", OK), read(1, "a", true, "1"), read(1, "b", true, "2")}, true},
		{"one bad key among good ones", []step{write(0, "a", "1", OK), write(0, "b", "2", OK), read(1, "a", true, "1"), read(1, "b", false, "")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRecorder()
			for _, s := range tc.steps {
				s(r)
			}
			err := r.Check(10*time.Second, "")
			if tc.ok && err != nil {
				t.Fatalf("Check: %v, want linearizable", err)
			}
			if !tc.ok && !errors.Is(err, ErrNotLinearizable) {
				t.Fatalf("Check: %v, want ErrNotLinearizable", err)
			}
		})
	}
}

// TestConcurrentOverlap checks that operations whose intervals overlap may
// take effect in either order: a read that overlaps a write may see the old
// or the new value.
func TestConcurrentOverlap(t *testing.T) {
	for _, seen := range []string{"1", "2"} {
		r := NewRecorder()
		r.Write(0, "a", "1").Done(OK)
		w := r.Write(0, "a", "2")
		rd := r.Read(1, "a")
		rd.Answer(true, seen)
		w.Done(OK)
		if err := r.Check(10*time.Second, ""); err != nil {
			t.Errorf("read overlapping the write saw %s: %v", seen, err)
		}
	}
}

func TestVisualisationOnViolation(t *testing.T) {
	r := NewRecorder()
	r.Write(0, "a", "1").Done(OK)
	r.Read(1, "a").Answer(false, "")
	path := filepath.Join(t.TempDir(), "viz.html")
	err := r.Check(10*time.Second, path)
	if !errors.Is(err, ErrNotLinearizable) {
		t.Fatalf("Check: %v", err)
	}
	if _, serr := os.Stat(path); serr != nil {
		t.Fatalf("no visualisation written: %v", serr)
	}
}

func TestStatsAndAcknowledged(t *testing.T) {
	r := NewRecorder()
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Write(c, "k", "ok").Done(OK)
			r.Write(c, "k", "lost").Done(Failed)
			r.Write(c, "k", "maybe").Done(Unknown)
			r.Read(c, "k").Answer(true, "ok")
			r.Read(c, "k").Fail() // left out
		}()
	}
	wg.Wait()
	s := r.Stats()
	if s != (Stats{WritesOK: 4, WritesFailed: 4, WritesUnknown: 4, Reads: 4}) {
		t.Fatalf("Stats = %+v", s)
	}
	if got := r.Acknowledged()["k"]; len(got) != 4 {
		t.Fatalf("Acknowledged = %v", got)
	}
	op := r.Write(0, "k", "twice")
	op.Done(OK)
	op.Done(Failed) // only the first end counts
	if s := r.Stats(); s.WritesOK != 5 || s.WritesFailed != 4 {
		t.Fatalf("a second Done counted: %+v", s)
	}
}
