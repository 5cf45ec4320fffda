package raftstore

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/meshwork/meshwork/policy"
)

// BackupInfo is what InspectBackup tells of a backup file: its header and
// a summary of the state it holds. It carries no values and no secrets.
type BackupInfo struct {
	// Format and Version are the backup format's name and version.
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Index and Term are those of the Raft snapshot it was taken from.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// Node is the server that took it, Created when.
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
	// Size is the state's size in bytes, uncompressed, and SHA256 its
	// checksum; FileSize is the file's size.
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	FileSize int64  `json:"file_size"`
	// Private says whether the servers' private state is included, and
	// OmittedKV which key prefixes were left out when it is not.
	Private   string   `json:"private"`
	OmittedKV []string `json:"omitted_kv,omitempty"`
	// PolicyIndex and Documents are the policy's index and its documents
	// counted by kind.
	PolicyIndex uint64              `json:"policy_index"`
	Documents   map[policy.Kind]int `json:"documents"`
	// KVKeys counts the replicated keys (the CA's state and others), by
	// their first path segment.
	KVKeys map[string]int `json:"kv_keys"`
	// ACLTokens and ACLPolicies count the ACL state.
	ACLTokens   int `json:"acl_tokens"`
	ACLPolicies int `json:"acl_policies"`
}

// InspectBackup reads a backup as `meshwork snapshot save` writes it
// (docs/policy.md) and checks it whole, as a restore would: gzip, header,
// size, checksum, and a state that decodes and validates. Anything wrong is
// an error matching ErrBadSnapshot that says what. It reads at most the
// largest backup a restore accepts.
func InspectBackup(r io.Reader) (BackupInfo, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSnapshot+1))
	if err != nil {
		return BackupInfo{}, fmt.Errorf("raftstore: inspect: %w", err)
	}
	if len(b) > maxSnapshot {
		return BackupInfo{}, fmt.Errorf("raftstore: inspect: %w: larger than %d bytes", ErrBadSnapshot, maxSnapshot)
	}
	h, st, err := readBackup(b)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("raftstore: inspect: %w", err)
	}
	info := BackupInfo{
		Format: h.Format, Version: h.Version, Index: h.Index, Term: h.Term,
		Node: h.Node, Created: h.Created, Size: h.Size, SHA256: h.SHA256, FileSize: int64(len(b)),
		Private: h.Private, OmittedKV: slices.Clone(h.OmittedKV),
		PolicyIndex: st.policyIndex, Documents: st.policySet().Counts(),
		KVKeys: map[string]int{},
	}
	if info.Private == "" {
		info.Private = backupPrivateIncluded // written before the field existed
	}
	st.kv.Root().Walk(func(k []byte, _ any) bool {
		info.KVKeys[kvGroup(string(k))]++
		return false
	})
	if st.acl != nil && st.acl.st != nil {
		info.ACLTokens = len(st.acl.st.Tokens())
		info.ACLPolicies = len(st.acl.st.Policies())
	}
	return info, nil
}

// kvGroup is the first segment of a key, with its slash ("ca/"), or the
// key itself when it has none.
func kvGroup(key string) string {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i+1]
		}
	}
	return key
}
