package raftstore

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// maxSnapshot bounds a backup file (256 MiB); policy and CA state are far
// smaller.
const maxSnapshot = 256 << 20

// BackupFormat names the backup format in its header.
const BackupFormat = "meshwork-snapshot"

// backupHeader is the first line of a backup, inside the gzip stream. The
// state (the FSM's own serialisation) follows it.
type backupHeader struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Index   uint64    `json:"index"`
	Term    uint64    `json:"term"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
}

// save writes a backup of the newest snapshot to w, taking one first.
func (s *server) saveBackup(w io.Writer) error {
	if err := s.wait(s.raft.Snapshot()); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return raftError(err)
	}
	list, err := s.snaps.List()
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return errors.New("no snapshot to save")
	}
	meta, rc, err := s.snaps.Open(list[0].ID)
	if err != nil {
		return err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxSnapshot+1))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	h := backupHeader{Format: BackupFormat, Version: 1, Index: meta.Index, Term: meta.Term, Size: int64(len(data)),
		SHA256: hex.EncodeToString(sum[:]), Node: s.cfg.NodeName, Created: time.Now().UTC()}
	zw := gzip.NewWriter(w)
	hb, _ := json.Marshal(h)
	if _, err := zw.Write(append(hb, '\n')); err != nil {
		return err
	}
	if _, err := zw.Write(data); err != nil {
		return err
	}
	return zw.Close()
}

// readBackup checks a backup whole: gzip, header, size, checksum, and that
// the state decodes and validates. It returns the header and the state.
func readBackup(b []byte) (backupHeader, []byte, error) {
	var h backupHeader
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return h, nil, fmt.Errorf("%w: not a gzip stream: %v", ErrBadSnapshot, err)
	}
	br := bufio.NewReader(io.LimitReader(zr, maxSnapshot+64<<10))
	line, err := br.ReadBytes('\n')
	if err != nil {
		return h, nil, fmt.Errorf("%w: no header: %v", ErrBadSnapshot, err)
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Format != BackupFormat {
		return h, nil, fmt.Errorf("%w: header is not a %s header", ErrBadSnapshot, BackupFormat)
	}
	if h.Version != 1 {
		return h, nil, fmt.Errorf("%w: version %d is unknown", ErrBadSnapshot, h.Version)
	}
	data, err := io.ReadAll(br)
	if err != nil {
		return h, nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if int64(len(data)) != h.Size {
		return h, nil, fmt.Errorf("%w: state is %d bytes, header says %d (truncated?)", ErrBadSnapshot, len(data), h.Size)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != h.SHA256 {
		return h, nil, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := decodeState(bytes.NewReader(data)); err != nil {
		return h, nil, err
	}
	return h, data, nil
}

// restoreAttempts bounds how often a restore waits for a membership change
// to commit and tries again.
const restoreAttempts = 10

// restoreWhenSettled hands the state to Raft. Raft refuses a restore while a
// membership change is uncommitted (a server joining a new cluster, say), so
// it first waits for everything the leader holds to be applied, and retries
// if another change came in between.
func (s *server) restoreWhenSettled(ctx context.Context, h backupHeader, data []byte) error {
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: h.Index, Term: h.Term, Size: int64(len(data))}
	var err error
	for range restoreAttempts {
		if err = s.wait(s.raft.Barrier(s.cfg.ApplyTimeout)); err != nil {
			return err
		}
		if err = ctx.Err(); err != nil {
			return err
		}
		errc := make(chan error, 1)
		go func() { errc <- s.raft.Restore(meta, bytes.NewReader(data), 2*s.cfg.ApplyTimeout) }()
		select {
		case err = <-errc:
		case <-s.stop:
			return errShutdown
		}
		if err == nil || !strings.Contains(err.Error(), "wait until the configuration entry") {
			return err
		}
		s.log.Info("snapshot restore waits for a membership change to commit", "err", err)
	}
	return err
}

// restoreBackup installs a checked backup through Raft (on the leader), then
// commits a reindex entry so every agent sees the restored state as newer
// than what it holds. It returns that entry's index.
func (s *server) restoreBackup(ctx context.Context, b []byte) (uint64, error) {
	h, data, err := readBackup(b)
	if err != nil {
		return 0, err
	}
	if s.raft.State() != raft.Leader {
		return 0, s.notLeaderError()
	}
	if data, err = restoreACLFloor(data, s.fsm.state().acl.st); err != nil {
		return 0, err
	}
	if err := s.restoreWhenSettled(ctx, h, data); err != nil {
		return 0, fmt.Errorf("restore: %w", raftError(err))
	}
	idx, err := s.batcher.submit(ctx, Txn{{Type: opReindex}})
	if err != nil {
		s.fsm.needReindex.Store(true) // the next leader will do it
		return 0, fmt.Errorf("restored, but the reindex entry failed: %w", err)
	}
	s.fsm.needReindex.Store(false)
	s.log.Info("snapshot restored", "from_node", h.Node, "backup_index", h.Index, "index", idx)
	return idx, nil
}
