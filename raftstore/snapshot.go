package raftstore

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
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
//
// Version 1 holds the whole state. Version 2 is a backup without the
// servers' private state (Private is "omitted"): it is what an agent that
// is not a server gets. It has its own version so that a server too old to
// know the difference refuses it, rather than restoring it as a whole state
// and wiping the private keys the backup left out.
type backupHeader struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Index   uint64    `json:"index"`
	Term    uint64    `json:"term"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
	// Private is backupPrivateIncluded or backupPrivateOmitted; absent in
	// backups written before it existed, which include everything.
	Private string `json:"private,omitempty"`
	// OmittedKV lists the key prefixes left out when Private is omitted.
	// A restore keeps the cluster's current keys under them.
	OmittedKV []string `json:"omitted_kv,omitempty"`
}

// Values of backupHeader.Private.
const (
	backupPrivateIncluded = "included"
	backupPrivateOmitted  = "omitted"
)

// saveBackup writes a backup of the newest snapshot to w, taking one
// first. Without private, the keys under omittedKV are left out.
func (s *server) saveBackup(w io.Writer, private bool) error {
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
	h := backupHeader{Format: BackupFormat, Version: 1, Index: meta.Index, Term: meta.Term,
		Node: s.cfg.NodeName, Created: time.Now().UTC(), Private: backupPrivateIncluded}
	if !private {
		st, err := decodeState(bytes.NewReader(data))
		if err != nil {
			return err
		}
		h.Version, h.Private, h.OmittedKV = 2, backupPrivateOmitted, s.omittedKV()
		if data, err = st.withoutKV(h.OmittedKV).marshal(); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(data)
	h.Size, h.SHA256 = int64(len(data)), hex.EncodeToString(sum[:])
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

// omittedKV is what a backup without the private state leaves out: the
// private keys and the public ones bound to them.
func (s *server) omittedKV() []string {
	out := slices.Concat(s.cfg.PrivateKV, s.cfg.PrivateBoundKV)
	slices.Sort(out)
	return slices.Compact(out)
}

// keptOnRestore is what a restore of a backup with header h takes from the
// cluster's current state rather than from the backup: the keys that never
// go back (Config.KeepOnRestore) and, when the backup left the private
// state out, the private keys and those bound to them.
func (s *server) keptOnRestore(h backupHeader) []string {
	keep := slices.Clone(s.cfg.KeepOnRestore)
	if h.Private == backupPrivateOmitted {
		keep = slices.Concat(keep, h.OmittedKV, s.omittedKV())
	}
	slices.Sort(keep)
	return slices.Compact(keep)
}

// readBackup checks a backup whole: gzip, header, size, checksum, and that
// the state decodes and validates. It returns the header and the state.
func readBackup(b []byte) (backupHeader, *fsmState, error) {
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
	if err := h.check(); err != nil {
		return h, nil, err
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
	st, err := decodeState(bytes.NewReader(data))
	if err != nil {
		return h, nil, err
	}
	for _, p := range h.OmittedKV {
		if e := st.kvList(p, nil); len(e) > 0 {
			return h, nil, fmt.Errorf("%w: the backup says it leaves out keys under %q, yet holds %q", ErrBadSnapshot, p, e[0].Key)
		}
	}
	return h, st, nil
}

// check checks the header's version against what it says of the private
// state.
func (h *backupHeader) check() error {
	switch h.Version {
	case 1:
		if h.Private != "" && h.Private != backupPrivateIncluded || len(h.OmittedKV) > 0 {
			return fmt.Errorf("%w: a version 1 backup holds the whole state, yet its header says private %q, omitted %q", ErrBadSnapshot, h.Private, h.OmittedKV)
		}
	case 2:
		if h.Private != backupPrivateOmitted || len(h.OmittedKV) == 0 {
			return fmt.Errorf("%w: a version 2 backup leaves the private state out, yet its header says private %q, omitted %q", ErrBadSnapshot, h.Private, h.OmittedKV)
		}
		for _, p := range h.OmittedKV {
			if err := validKVKey(p); err != nil {
				return fmt.Errorf("%w: omitted prefix: %v", ErrBadSnapshot, err)
			}
		}
	default:
		return fmt.Errorf("%w: version %d is unknown", ErrBadSnapshot, h.Version)
	}
	return nil
}

// withoutKV returns s without the keys under prefixes.
func (s *fsmState) withoutKV(prefixes []string) *fsmState {
	kt := s.kv.Txn()
	for _, p := range prefixes {
		kt.DeletePrefix([]byte(p))
	}
	ns := s.derive(true)
	ns.kv = kt.Commit()
	return ns
}

// keepKV returns s, a state read from a backup, with the keys under
// prefixes taken from cur, the cluster's state: cur's keys replace the
// backup's, and the backup's stay only where cur has none (a restore onto
// a new cluster). Its KV index covers the kept keys' modify indexes.
func (s *fsmState) keepKV(cur *fsmState, prefixes []string) *fsmState {
	if len(prefixes) == 0 {
		return s
	}
	kt := s.kv.Txn()
	kvIndex := s.kvIndex
	for _, p := range prefixes {
		cur.kv.Root().WalkPrefix([]byte(p), func(k []byte, v any) bool {
			kt.Insert(k, v)
			kvIndex = max(kvIndex, v.(*KVEntry).ModifyIndex)
			return false
		})
	}
	ns := s.derive(true)
	ns.kv, ns.kvIndex = kt.Commit(), kvIndex
	return ns
}

// callerIsServer reports whether the caller of an RPC is a server of the
// Raft configuration, and names it. Only such a caller may have the
// private state in a backup (it holds that state already), and only its
// calls go undecided by ACL tokens (rpcauth.go).
//
// The caller must present a leaf that only servers can mint
// (keytls.IsServerLeaf): with a server key, a leaf of the server
// authority (or of one derived from accepted keys, during a rotation);
// without one, any leaf minted from the cluster key or an accepted
// cluster key, which every agent holds (the server then cannot tell a server from an agent,
// and warns at start). The name is that leaf's common name (the agent's
// node name, which is also its Raft server ID). A leaf from the mesh CA
// never counts, whatever it names: it proves a bootstrap token, not a
// server. The Raft configuration, not gossip, says who is a server:
// anyone with the gossip key can claim the server role in gossip, while
// the configuration lists the servers that already replicate every key.
func (n *Node) callerIsServer(r *http.Request) (string, bool, error) {
	st, ok := PeerTLS(r)
	if !ok || len(st.PeerCertificates) == 0 {
		return "", false, nil
	}
	leaf := st.PeerCertificates[0]
	name := leaf.Subject.CommonName
	if !n.auth.IsServerLeaf(leaf) {
		// A cluster-key leaf under a server's name, where servers have
		// server leaves: an agent posing as that server, or a server not
		// yet given the key (a rolling restart). Either is worth a look.
		if n.auth.HasServerKey() && n.auth.IsClusterLeaf(leaf) {
			if named, err := n.inConfiguration(name); err == nil && named {
				n.log.Warn("rpc caller named after a server presents no server certificate: an agent posing as it, or a server without server_key",
					"caller", name, "remote", r.RemoteAddr, "path", r.URL.Path)
			}
		}
		return name, false, nil
	}
	named, err := n.inConfiguration(name)
	return name, named, err
}

// inConfiguration reports whether id is a server of the Raft configuration.
func (n *Node) inConfiguration(id string) (bool, error) {
	f := n.srv.raft.GetConfiguration()
	if err := n.srv.wait(f); err != nil {
		return false, raftError(err)
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return true, nil
		}
	}
	return false, nil
}

// restoreAttempts bounds how often a restore waits for a membership change
// to commit and tries again.
const restoreAttempts = 10

// restoreWhenSettled hands the state to Raft. Raft refuses a restore while a
// membership change is uncommitted (a server joining a new cluster, say), so
// it first waits for everything the leader holds to be applied, and retries
// if another change came in between.
func (s *server) restoreWhenSettled(ctx context.Context, h backupHeader, st *fsmState, keep []string) error {
	var err error
	for range restoreAttempts {
		if err = s.restoreOnce(ctx, h, st, keep); err == nil || !strings.Contains(err.Error(), "wait until the configuration entry") {
			return err
		}
		s.log.Info("snapshot restore waits for a membership change to commit", "err", err)
	}
	return err
}

// restoreMergedHook, when set, is called by restoreOnce between reading the
// current state and installing the merged one. Tests only.
var restoreMergedHook atomic.Pointer[func()]

// restoreOnce installs st with the keys under keep taken from the current
// state. No write reaches Raft in between (restoreGate): one committed
// after the current state was read would be lost, such as a bootstrap
// token used then.
func (s *server) restoreOnce(ctx context.Context, h backupHeader, st *fsmState, keep []string) error {
	s.restoreGate.Lock()
	defer s.restoreGate.Unlock()
	if err := s.wait(s.raft.Barrier(s.cfg.ApplyTimeout)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cur := s.fsm.state()
	data, err := st.keepKV(cur, keep).marshal()
	if err != nil {
		return err
	}
	// A restore never moves the ACL bootstrap index (nor the ACL index)
	// backwards: it must not re-open the bootstrap.
	if data, err = restoreACLFloor(data, cur.acl.st); err != nil {
		return err
	}
	if hook := restoreMergedHook.Load(); hook != nil {
		(*hook)()
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: h.Index, Term: h.Term, Size: int64(len(data))}
	errc := make(chan error, 1)
	go func() { errc <- s.raft.Restore(meta, bytes.NewReader(data), 2*s.cfg.ApplyTimeout) }()
	select {
	case err = <-errc:
		return err
	case <-s.stop:
		return errShutdown
	}
}

// restoreBackup installs a checked backup through Raft (on the leader), then
// commits a reindex entry so every agent sees the restored state as newer
// than what it holds. It returns that entry's index.
func (s *server) restoreBackup(ctx context.Context, b []byte) (uint64, error) {
	h, st, err := readBackup(b)
	if err != nil {
		return 0, err
	}
	if s.raft.State() != raft.Leader {
		return 0, s.notLeaderError()
	}
	keep := s.keptOnRestore(h)
	if err := s.restoreWhenSettled(ctx, h, st, keep); err != nil {
		return 0, fmt.Errorf("restore: %w", raftError(err))
	}
	idx, err := s.batcher.submit(ctx, Txn{{Type: opReindex}})
	if err != nil {
		s.fsm.needReindex.Store(true) // the next leader will do it
		return 0, fmt.Errorf("restored, but the reindex entry failed: %w", err)
	}
	s.fsm.needReindex.Store(false)
	s.log.Info("snapshot restored", "from_node", h.Node, "backup_index", h.Index, "private", cmp.Or(h.Private, backupPrivateIncluded), "kept", keep, "index", idx)
	return idx, nil
}
