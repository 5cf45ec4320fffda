package walmigrate

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/meshwork/meshwork/raftstore/boltlog"
)

var quiet = slog.New(slog.DiscardHandler)

func walEntry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1 + i/50, Type: raft.LogCommand,
		Data: []byte(fmt.Sprintf("entry %d %s", i, strings.Repeat("x", 40))), AppendedAt: time.Unix(1700000000, int64(i))}
}

// openWAL opens raft-wal as meshwork did before boltlog: with its bolt meta
// store, here with small segments so that a log spans several.
func openWAL(t *testing.T, dir string) (*raftwal.WAL, func()) {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(dir, raftwal.WithMetaStore(meta), raftwal.WithSegmentSize(4096))
	if err != nil {
		t.Fatalf("raft-wal open: %v", err)
	}
	return w, func() { w.Close(); meta.Close() }
}

func appendWAL(t *testing.T, w *raftwal.WAL, lo, hi uint64) {
	t.Helper()
	for i := lo; i <= hi; i += 7 { // batches of 7, as Raft groups them
		var batch []*raft.Log
		for j := i; j <= min(i+6, hi); j++ {
			batch = append(batch, walEntry(j))
		}
		if err := w.StoreLogs(batch); err != nil {
			t.Fatalf("raft-wal store %d: %v", i, err)
		}
	}
}

// writeTruncatedWAL makes the directory issue 23 found: a log written,
// its suffix cleared (as a deposed leader does), written again, cleared
// again, with Raft's term and vote set. It returns the last index kept.
func writeTruncatedWAL(t *testing.T, dir string) uint64 {
	t.Helper()
	w, closeWAL := openWAL(t, dir)
	defer closeWAL()
	appendWAL(t, w, 1, 300)
	if err := w.DeleteRange(1, 40); err != nil { // a snapshot compacted the head
		t.Fatal(err)
	}
	// Clearing a suffix that ends in the unsealed tail segment is what
	// leaves a sealed segment without an index block.
	if err := w.DeleteRange(298, 300); err != nil {
		t.Fatal(err)
	}
	appendWAL(t, w, 298, 320)
	if err := w.DeleteRange(311, 320); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]uint64{"CurrentTerm": 9, "LastVoteTerm": 8} {
		if err := w.SetUint64([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Set([]byte("LastVoteCand"), []byte("s2")); err != nil {
		t.Fatal(err)
	}
	return 310
}

func TestRaftWALCannotReadItsTruncatedTail(t *testing.T) {
	dir := t.TempDir()
	last := writeTruncatedWAL(t, dir)
	w, closeWAL := openWAL(t, dir)
	defer closeWAL()
	var l raft.Log
	err := w.GetLog(last, &l)
	if err == nil || !strings.Contains(err.Error(), "sealed segment has no index block") {
		t.Fatalf("raft-wal read of entry %d after a restart: %v; the bug (raft-wal #31) is expected here", last, err)
	}
	// Raft cannot start on it either.
	_, trans := raft.NewInmemTransport("a")
	conf := raft.DefaultConfig()
	conf.LocalID = "a"
	conf.LogLevel = "OFF"
	if err := startRaft(conf, w, trans); err == nil {
		t.Fatal("raft started on the truncated raft-wal directory")
	}
}

// startRaft runs NewRaft, which panics or fails on an unreadable log.
func startRaft(conf *raft.Config, w *raftwal.WAL, trans raft.Transport) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	r, err := raft.NewRaft(conf, &raft.MockFSM{}, w, w, raft.NewInmemSnapshotStore(), trans)
	if err == nil {
		r.Shutdown().Error()
	}
	return err
}

func TestMigrateTruncatedWAL(t *testing.T) {
	raftDir := t.TempDir()
	walDir := filepath.Join(raftDir, "wal")
	if err := os.Mkdir(walDir, 0o700); err != nil {
		t.Fatal(err)
	}
	last := writeTruncatedWAL(t, walDir)
	dbPath := filepath.Join(raftDir, "raft.db")

	res, err := Migrate(walDir, dbPath, quiet)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if res.First != 41 || res.Last != last || res.Entries != last-40 || res.Recovered != 2 {
		t.Fatalf("result %+v; want entries 41-%d and the two segments sealed without an index block read by a scan", res, last)
	}
	if _, err := os.Stat(walDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old directory still in place: %v", err)
	}
	if res.MovedTo != walDir+MigratedSuffix {
		t.Fatalf("moved to %q", res.MovedTo)
	}
	s, err := boltlog.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkMigrated(t, s, 41, last)

	// A second start finds nothing to migrate.
	if res, err := Migrate(walDir, dbPath, quiet); res != nil || err != nil {
		t.Fatalf("second migrate: %+v, %v; want nothing", res, err)
	}
}

func checkMigrated(t *testing.T, s *boltlog.Store, lo, hi uint64) {
	t.Helper()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != lo || last != hi {
		t.Fatalf("store holds %d-%d, want %d-%d", first, last, lo, hi)
	}
	for i := lo; i <= hi; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		want := walEntry(i)
		if l.Index != i || l.Term != want.Term || l.Type != want.Type || !bytes.Equal(l.Data, want.Data) || !l.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("entry %d = %+v, want %+v", i, l, *want)
		}
	}
	for k, v := range map[string]uint64{"CurrentTerm": 9, "LastVoteTerm": 8} {
		if got, err := s.GetUint64([]byte(k)); got != v || err != nil {
			t.Fatalf("%s = %d, %v; want %d", k, got, err, v)
		}
	}
	if got, err := s.Get([]byte("LastVoteCand")); string(got) != "s2" || err != nil {
		t.Fatalf("LastVoteCand = %q, %v", got, err)
	}
}

// TestMigrateInterrupted starts from the states a crash can leave.
func TestMigrateInterrupted(t *testing.T) {
	setup := func(t *testing.T) (walDir, dbPath string, last uint64) {
		raftDir := t.TempDir()
		walDir = filepath.Join(raftDir, "wal")
		if err := os.Mkdir(walDir, 0o700); err != nil {
			t.Fatal(err)
		}
		return walDir, filepath.Join(raftDir, "raft.db"), writeTruncatedWAL(t, walDir)
	}
	t.Run("copy half written", func(t *testing.T) {
		walDir, dbPath, last := setup(t)
		// A crash during the copy leaves the temporary file, partly full.
		part, err := boltlog.Open(dbPath + ".migrating")
		if err != nil {
			t.Fatal(err)
		}
		if err := part.StoreLogs([]*raft.Log{walEntry(41), walEntry(42)}); err != nil {
			t.Fatal(err)
		}
		part.Close()
		if _, err := Migrate(walDir, dbPath, quiet); err != nil {
			t.Fatal(err)
		}
		s, err := boltlog.Open(dbPath)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		checkMigrated(t, s, 41, last)
		if _, err := os.Stat(dbPath + ".migrating"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("temporary file left: %v", err)
		}
	})
	t.Run("store in place, old directory not yet moved", func(t *testing.T) {
		walDir, dbPath, last := setup(t)
		if _, err := Migrate(walDir, dbPath, quiet); err != nil {
			t.Fatal(err)
		}
		// Undo the last step, as a crash before it would have.
		if err := os.Rename(walDir+MigratedSuffix, walDir); err != nil {
			t.Fatal(err)
		}
		res, err := Migrate(walDir, dbPath, quiet)
		if err != nil || res == nil || res.Entries != 0 || res.MovedTo == "" {
			t.Fatalf("finishing migrate: %+v, %v", res, err)
		}
		s, err := boltlog.Open(dbPath)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		checkMigrated(t, s, 41, last)
	})
}

func TestMigrateRefusesUnreadableData(t *testing.T) {
	raftDir := t.TempDir()
	walDir := filepath.Join(raftDir, "wal")
	if err := os.Mkdir(walDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeTruncatedWAL(t, walDir)
	// Damage the first segment: its entries are gone.
	segs, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if len(segs) == 0 {
		t.Fatal("no segment files")
	}
	if err := os.Truncate(segs[0], 64); err != nil {
		t.Fatal(err)
	}
	before := listDir(t, walDir)
	dbPath := filepath.Join(raftDir, "raft.db")
	_, err := Migrate(walDir, dbPath, quiet)
	if !errors.Is(err, ErrUnreadable) {
		t.Fatalf("migrate of a damaged directory: %v, want ErrUnreadable", err)
	}
	if !strings.Contains(err.Error(), filepath.Base(segs[0])) {
		t.Fatalf("error does not name the damaged segment %s: %v", filepath.Base(segs[0]), err)
	}
	if after := listDir(t, walDir); after != before {
		t.Fatalf("the old directory changed:\n%s\nto\n%s", before, after)
	}
	for _, p := range []string{dbPath, dbPath + ".migrating"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists after a failed migration", p)
		}
	}
}

// TestMigrateSurvivesRaftWALPanic damages an entry inside a sealed
// segment, where raft-wal checks no checksum: its decoder panics on the
// bytes. The migration must report it, not crash.
func TestMigrateSurvivesRaftWALPanic(t *testing.T) {
	raftDir := t.TempDir()
	walDir := filepath.Join(raftDir, "wal")
	if err := os.Mkdir(walDir, 0o700); err != nil {
		t.Fatal(err)
	}
	w, closeWAL := openWAL(t, walDir)
	appendWAL(t, w, 1, 100)
	closeWAL()
	segs, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	f, err := os.OpenFile(segs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Entry 1's payload starts after the file header (32 bytes) and its
	// frame header (8): make its first varint one that never ends.
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 12), 32+8); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Migrate(walDir, filepath.Join(raftDir, "raft.db"), quiet)
	if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "panicked") || !strings.Contains(err.Error(), "entry 1") {
		t.Fatalf("migrate of a segment raft-wal panics on: %v, want ErrUnreadable naming entry 1 and the panic", err)
	}
	if _, err := os.Stat(walDir); err != nil {
		t.Fatalf("old directory moved after a failed migration: %v", err)
	}
}

func TestMigrateEmptyAndFreshDirectories(t *testing.T) {
	t.Run("no old directory", func(t *testing.T) {
		raftDir := t.TempDir()
		res, err := Migrate(filepath.Join(raftDir, "wal"), filepath.Join(raftDir, "raft.db"), quiet)
		if res != nil || err != nil {
			t.Fatalf("%+v, %v; want nothing to do", res, err)
		}
	})
	t.Run("old directory never written", func(t *testing.T) {
		raftDir := t.TempDir()
		walDir := filepath.Join(raftDir, "wal")
		if err := os.Mkdir(walDir, 0o700); err != nil {
			t.Fatal(err)
		}
		_, closeWAL := openWAL(t, walDir)
		closeWAL()
		res, err := Migrate(walDir, filepath.Join(raftDir, "raft.db"), quiet)
		if err != nil || res.Entries != 0 || res.MovedTo == "" {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("segments without meta", func(t *testing.T) {
		raftDir := t.TempDir()
		walDir := filepath.Join(raftDir, "wal")
		if err := os.Mkdir(walDir, 0o700); err != nil {
			t.Fatal(err)
		}
		writeTruncatedWAL(t, walDir)
		if err := os.Remove(filepath.Join(walDir, metadb.FileName)); err != nil {
			t.Fatal(err)
		}
		if _, err := Migrate(walDir, filepath.Join(raftDir, "raft.db"), quiet); !errors.Is(err, ErrUnreadable) {
			t.Fatalf("%v, want ErrUnreadable", err)
		}
	})
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		fi, _ := e.Info()
		fmt.Fprintf(&b, "%s %d %s\n", e.Name(), fi.Size(), fi.ModTime())
	}
	return b.String()
}
