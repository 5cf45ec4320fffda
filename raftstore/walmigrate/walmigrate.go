// Package walmigrate moves a server's Raft log and stable store from the
// raft-wal v0.4.0 directory that earlier releases kept (<data_dir>/raft/wal)
// into a boltlog store, on the first start of a release that uses boltlog.
//
// It reads the old directory without writing to it: the bolt meta file is
// opened read-only and segments are read through raft-wal's own segment
// package over a file system that refuses writes. A segment that raft-wal
// sealed without an index block when it truncated the log's tail (raft-wal
// issue #31: raft-wal itself cannot read it after a restart) is read by
// scanning its frames, the way raft-wal recovers an unsealed tail; only
// the entries its metadata still counts are copied.
//
// Crash safety comes from renames: the copy is written to a temporary file
// and synced, renamed into place, and only then is the old directory
// renamed aside (wal.migrated). Interrupted at any point, the next start
// either migrates again from the untouched old directory or finds the
// store in place and finishes the rename.
package walmigrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	bolt "go.etcd.io/bbolt"

	"github.com/meshwork/meshwork/raftstore/boltlog"
)

// ErrUnreadable means the old directory holds Raft data that cannot be
// read completely. Nothing is migrated and the directory is left as it was.
var ErrUnreadable = errors.New("raft-wal data cannot be read")

// MigratedSuffix is appended to the old directory's name once its content
// is safely in the new store.
const MigratedSuffix = ".migrated"

// batchSize is how many entries go into one transaction of the new store.
const batchSize = 1024

// Result says what a migration copied.
type Result struct {
	// Entries is the number of log entries copied, First to Last.
	Entries     uint64
	First, Last uint64
	// StableKeys names the stable store's keys copied (Raft's term and
	// vote).
	StableKeys []string
	// Segments is the number of raft-wal segments read, and Recovered how
	// many of them were sealed without an index block and read by a scan.
	Segments, Recovered int
	// MovedTo is where the old directory now is.
	MovedTo string
}

// Migrate moves the raft-wal directory walDir, if there is one, into a new
// boltlog store at dbPath. It returns nil and no error when there is
// nothing to migrate. On error nothing has changed for the next attempt:
// walDir is as it was and dbPath does not exist.
func Migrate(walDir, dbPath string, log *slog.Logger) (*Result, error) {
	if _, err := os.Stat(walDir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("walmigrate: %w", err)
	}
	if _, err := os.Stat(dbPath); err == nil {
		// An earlier start copied everything and renamed the store into
		// place, then stopped before moving the old directory aside.
		moved, err := moveAside(walDir)
		if err != nil {
			return nil, err
		}
		log.Info("raft-wal directory moved aside after an earlier migration", "from", walDir, "to", moved)
		return &Result{MovedTo: moved}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("walmigrate: %w", err)
	}

	tmp := dbPath + ".migrating"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("walmigrate: remove the copy of an interrupted migration: %w", err)
	}
	dst, err := boltlog.Open(tmp)
	if err != nil {
		return nil, fmt.Errorf("walmigrate: %w", err)
	}
	res, err := Copy(walDir, dst)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("walmigrate: migrate %s: %w", walDir, err)
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return nil, fmt.Errorf("walmigrate: %w", err)
	}
	if err := syncDir(filepath.Dir(dbPath)); err != nil {
		return nil, fmt.Errorf("walmigrate: %w", err)
	}
	if res.MovedTo, err = moveAside(walDir); err != nil {
		return nil, err
	}
	log.Info("raft log migrated from raft-wal", "entries", res.Entries, "first", res.First, "last", res.Last,
		"stable_keys", strings.Join(res.StableKeys, ","), "segments", res.Segments,
		"segments_without_index", res.Recovered, "store", dbPath, "old_dir", res.MovedTo)
	return res, nil
}

// moveAside renames dir to dir.migrated (or dir.migrated.N when that is
// taken) and syncs the parent, so that the migration never runs twice.
func moveAside(dir string) (string, error) {
	to := dir + MigratedSuffix
	for n := 1; ; n++ {
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			break
		}
		to = fmt.Sprintf("%s%s.%d", dir, MigratedSuffix, n)
	}
	if err := os.Rename(dir, to); err != nil {
		return "", fmt.Errorf("walmigrate: move the old directory aside: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return "", fmt.Errorf("walmigrate: %w", err)
	}
	return to, nil
}

// Copy reads every stable key and log entry of the raft-wal directory
// walDir, without writing to it, into dst. Entries are checked to be
// contiguous and each to carry its own index.
func Copy(walDir string, dst *boltlog.Store) (*Result, error) {
	state, stable, err := readMeta(walDir)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	segs := slices.Clone(state.Segments)
	slices.SortFunc(segs, func(a, b types.SegmentInfo) int { return cmpUint(a.BaseIndex, b.BaseIndex) })
	filer := segment.NewFiler(walDir, readOnlyFS{fs.New()})
	codec := &raftwal.BinaryCodec{}
	var batch []*raft.Log
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := dst.StoreLogs(batch); err != nil {
			return err
		}
		batch = batch[:0]
		return nil
	}
	for _, si := range segs {
		res.Segments++
		sealed := !si.SealTime.IsZero()
		if sealed && si.IndexStart == 0 {
			res.Recovered++
		}
		err := readSegment(filer, codec, si, func(l *raft.Log) error {
			if res.Entries > 0 && l.Index != res.Last+1 {
				return fmt.Errorf("%w: entry %d follows entry %d: the log has a gap", ErrUnreadable, l.Index, res.Last)
			}
			if res.Entries == 0 {
				res.First = l.Index
			}
			res.Last = l.Index
			res.Entries++
			batch = append(batch, l)
			if len(batch) >= batchSize {
				return flush()
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("segment %s (base index %d): %w", segment.FileName(si), si.BaseIndex, err)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(stable))
	for k := range stable {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := dst.Set([]byte(k), stable[k]); err != nil {
			return nil, err
		}
	}
	res.StableKeys = keys
	return res, nil
}

// readSegment calls emit for each entry that the segment's metadata counts
// as live: MinIndex to MaxIndex when sealed, MinIndex to the last committed
// entry of an unsealed tail.
func readSegment(filer *segment.Filer, codec raftwal.Codec, si types.SegmentInfo, emit func(*raft.Log) error) error {
	if si.Codec != codec.ID() {
		return fmt.Errorf("%w: unknown codec %d", ErrUnreadable, si.Codec)
	}
	sealed := !si.SealTime.IsZero()
	// RecoverTail scans the frames and checks the last batch's checksum,
	// with no need for an index block; over readOnlyFS it cannot write.
	var r types.SegmentWriter
	err := noPanic(func() error {
		var err error
		r, err = filer.RecoverTail(si)
		return err
	})
	if errors.Is(err, os.ErrNotExist) && !sealed {
		return nil // raft-wal had not created the tail's file yet: empty
	}
	if err != nil {
		return fmt.Errorf("%w: open: %v", ErrUnreadable, err)
	}
	defer r.Close()
	hi := si.MaxIndex
	if !sealed {
		hi = r.LastIndex()
		if hi == 0 {
			return nil
		}
	} else if got := r.LastIndex(); got < hi {
		return fmt.Errorf("%w: the metadata counts entries up to %d, the file holds them only up to %d", ErrUnreadable, hi, got)
	}
	for idx := si.MinIndex; idx <= hi; idx++ {
		var l raft.Log
		err := noPanic(func() error {
			buf, err := r.GetLog(idx)
			if err != nil {
				return err
			}
			defer buf.Close()
			return codec.Decode(buf.Bs, &l)
		})
		if err != nil {
			return fmt.Errorf("%w: entry %d: %v", ErrUnreadable, idx, err)
		}
		if l.Index != idx {
			return fmt.Errorf("%w: the entry at %d says it is entry %d", ErrUnreadable, idx, l.Index)
		}
		if err := emit(&l); err != nil {
			return err
		}
	}
	return nil
}

// readMeta reads raft-wal's bolt meta file read-only: the segment list and
// every stable key. A directory without one holds no data, unless it has
// segment files, which then cannot be placed.
func readMeta(walDir string) (types.PersistentState, map[string][]byte, error) {
	var state types.PersistentState
	stable := map[string][]byte{}
	path := filepath.Join(walDir, metadb.FileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		names, err := filepath.Glob(filepath.Join(walDir, "*.wal"))
		if err != nil {
			return state, nil, err
		}
		if len(names) > 0 {
			return state, nil, fmt.Errorf("%w: %d segment files but no %s to say which are live", ErrUnreadable, len(names), metadb.FileName)
		}
		return state, stable, nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return state, nil, fmt.Errorf("%s is locked by another process (is an older agent still running on this data directory?)", path)
	}
	if err != nil {
		return state, nil, fmt.Errorf("%w: %s: %v", ErrUnreadable, path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket([]byte(metadb.MetaBucket))
		sb := tx.Bucket([]byte(metadb.StableBucket))
		if mb == nil || sb == nil {
			return fmt.Errorf("%w: %s has no %q or %q bucket", ErrUnreadable, path, metadb.MetaBucket, metadb.StableBucket)
		}
		if raw := mb.Get([]byte(metadb.MetaKey)); raw != nil {
			if err := json.Unmarshal(raw, &state); err != nil {
				return fmt.Errorf("%w: %s: segment list: %v", ErrUnreadable, path, err)
			}
		}
		return sb.ForEach(func(k, v []byte) error {
			stable[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	return state, stable, err
}

// noPanic runs f, turning a panic inside raft-wal into an error: a damaged
// file must stop the migration, not the agent.
func noPanic(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("raft-wal panicked: %v", p)
		}
	}()
	return f()
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// errReadOnly answers every write the migration's file system is asked for.
var errReadOnly = errors.New("the raft-wal directory is read-only during migration")

// readOnlyFS is raft-wal's file system with every write refused, so that
// reading a segment can never change it.
type readOnlyFS struct{ *fs.FS }

func (readOnlyFS) Create(string, string, uint64) (types.WritableFile, error) { return nil, errReadOnly }
func (readOnlyFS) Delete(string, string) error                               { return errReadOnly }

func (f readOnlyFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	rf, err := f.OpenReader(dir, name)
	if err != nil {
		return nil, err
	}
	return readOnlyFile{rf}, nil
}

type readOnlyFile struct{ types.ReadableFile }

func (readOnlyFile) WriteAt([]byte, int64) (int, error) { return 0, errReadOnly }
func (readOnlyFile) Sync() error                        { return errReadOnly }
