// Package boltlog is the Raft log and stable store of a server agent: one
// bbolt file that implements raft.LogStore and raft.StableStore.
//
// Every StoreLogs batch is one bolt transaction, synced to disk before it
// returns, so an entry Raft was told is stored survives a crash. Entries
// are keyed by their index (big-endian), so DeleteRange removes any range,
// a prefix after a snapshot or a suffix when a follower's log conflicts
// with its leader's, in one transaction. The file is created 0600: the log
// holds the CA's sealed key material.
//
// It replaced raft-wal v0.4.0, whose tail truncation left a segment that
// could not be read after a restart (docs/design.md).
package boltlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

var (
	// ErrKeyNotFound answers Get and GetUint64 of a key never set. Its
	// text is what hashicorp/raft compares against ("not found"), so
	// Raft treats a missing term or vote as a fresh server.
	ErrKeyNotFound = errors.New("not found")
	// ErrCorrupt means the file holds something this package did not
	// write: an entry or value that does not decode.
	ErrCorrupt = errors.New("corrupt data")
	// ErrLocked means another process holds the file: two agents on one
	// data directory.
	ErrLocked = errors.New("file is locked by another process")
)

var (
	bucketLogs   = []byte("logs")
	bucketStable = []byte("stable")
)

// lockTimeout bounds the wait for bolt's file lock. A live agent holds it
// for its whole life, so waiting longer would only delay the error.
const lockTimeout = time.Second

// Store is a Raft log and stable store in one bolt file. It is safe for
// concurrent use; writes are serialised by bolt, reads run beside them.
type Store struct {
	db   *bolt.DB
	path string
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Open opens the store at path, creating it (0600) if it does not exist.
// The directory must exist.
func Open(path string) (*Store, error) {
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The freelist is rebuilt by a scan on open instead of being
		// written on every commit: each StoreLogs writes fewer pages.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("boltlog: open %s: %w (is another agent running on this data directory?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("boltlog: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLogs, bucketStable} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err == nil && created {
		// The new file's directory entry must survive a crash too.
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltlog: open %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close closes the file; it waits for transactions in progress. Calling it
// again does nothing.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltlog: close %s: %w", s.path, err)
	}
	return nil
}

// FirstIndex returns the lowest index stored, 0 when the log is empty.
func (s *Store) FirstIndex() (uint64, error) {
	return s.edgeIndex("first index", func(c *bolt.Cursor) []byte { k, _ := c.First(); return k })
}

// LastIndex returns the highest index stored, 0 when the log is empty.
func (s *Store) LastIndex() (uint64, error) {
	return s.edgeIndex("last index", func(c *bolt.Cursor) []byte { k, _ := c.Last(); return k })
}

func (s *Store) edgeIndex(op string, pick func(*bolt.Cursor) []byte) (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		k := pick(tx.Bucket(bucketLogs).Cursor())
		if k == nil {
			return nil
		}
		var err error
		idx, err = decodeKey(k)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("boltlog: %s: %w", op, err)
	}
	return idx, nil
}

// GetLog reads the entry at index into l; raft.ErrLogNotFound when there
// is none.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	return s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(encodeKey(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		if err := decodeEntry(index, v, l); err != nil {
			return fmt.Errorf("boltlog: get log: %w", err)
		}
		return nil
	})
}

// StoreLog stores one entry, durably.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores entries in one transaction, synced before it returns:
// either all of them survive a crash or none.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			v, err := encodeEntry(l)
			if err != nil {
				return err
			}
			if err := b.Put(encodeKey(l.Index), v); err != nil {
				return fmt.Errorf("entry %d: %w", l.Index, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltlog: store logs %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return nil
}

// DeleteRange deletes the entries from min to max inclusive, in one
// transaction. Any range may be given; Raft deletes a prefix after a
// snapshot and a suffix when its log conflicts with the leader's.
func (s *Store) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		// Collect first: deleting under a moving cursor can skip keys.
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(encodeKey(min)); k != nil; k, _ = c.Next() {
			idx, err := decodeKey(k)
			if err != nil {
				return err
			}
			if idx > max {
				break
			}
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltlog: delete range %d-%d: %w", min, max, err)
	}
	return nil
}

// Set stores a stable value, durably.
func (s *Store) Set(key, val []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStable).Put(key, val)
	})
	if err != nil {
		return fmt.Errorf("boltlog: set %q: %w", key, err)
	}
	return nil
}

// Get returns a stable value; ErrKeyNotFound when the key was never set.
func (s *Store) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStable).Get(key)
		if v == nil {
			return ErrKeyNotFound
		}
		val = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	if errors.Is(err, ErrKeyNotFound) {
		return nil, ErrKeyNotFound // unwrapped: raft compares the text
	}
	if err != nil {
		return nil, fmt.Errorf("boltlog: get %q: %w", key, err)
	}
	return val, nil
}

// SetUint64 stores a stable number as 8 bytes, little-endian: the encoding
// raft-wal used, so that values migrated from it read back the same.
func (s *Store) SetUint64(key []byte, val uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], val)
	return s.Set(key, b[:])
}

// GetUint64 returns a stable number; 0 and ErrKeyNotFound when the key was
// never set.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("boltlog: get %q: %w: %d bytes, want 8", key, ErrCorrupt, len(v))
	}
	return binary.LittleEndian.Uint64(v), nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
