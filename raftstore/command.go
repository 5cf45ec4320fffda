package raftstore

import (
	"encoding/json"
	"fmt"

	"github.com/meshwork/meshwork/policy"
)

// OpType is the kind of one operation in a transaction.
type OpType string

// Operation types.
const (
	// OpPolicySet writes a policy document.
	OpPolicySet OpType = "policy.set"
	// OpPolicyDelete deletes a policy document; a missing one is ErrNotFound.
	OpPolicyDelete OpType = "policy.delete"
	// OpKVSet writes a key of the internal namespace.
	OpKVSet OpType = "kv.set"
	// OpKVDelete deletes a key; a missing one is not an error unless CAS
	// names an index.
	OpKVDelete OpType = "kv.delete"
	// opReindex moves both indexes to the entry's index, so that watchers
	// see a state restored from a backup as a change.
	opReindex OpType = "reindex"
)

// Op is one operation. A Txn applies all of its Ops or none.
type Op struct {
	Type OpType `json:"t"`
	// Doc is the document of OpPolicySet.
	Doc *policy.Document `json:"doc,omitempty"`
	// Key names the document of OpPolicyDelete.
	Key *policy.Key `json:"key,omitempty"`
	// KVKey and Value are those of the KV operations.
	KVKey string `json:"k,omitempty"`
	Value []byte `json:"v,omitempty"`
	// CAS, when set, is the modify index the target must have: 0 means it
	// must not exist.
	CAS *uint64 `json:"cas,omitempty"`
}

// Txn is a list of operations applied atomically.
type Txn []Op

// TxnResult is the outcome of one Txn: the Raft index it was applied at, or
// the error that refused it.
type TxnResult struct {
	Index uint64       `json:"index"`
	Err   *RemoteError `json:"err,omitempty"`
}

// logVersion prefixes every command entry, so the format can change.
const logVersion byte = 1

// logEntry is the payload of one Raft log entry: several transactions that
// arrived together, applied in order and independently.
type logEntry struct {
	Txns []Txn `json:"txns"`
}

func encodeEntry(txns []Txn) ([]byte, error) {
	b, err := json.Marshal(logEntry{Txns: txns})
	if err != nil {
		return nil, err
	}
	return append([]byte{logVersion}, b...), nil
}

func decodeEntry(data []byte) ([]Txn, error) {
	if len(data) == 0 || data[0] != logVersion {
		return nil, fmt.Errorf("log entry of unknown version")
	}
	var e logEntry
	if err := json.Unmarshal(data[1:], &e); err != nil {
		return nil, err
	}
	return e.Txns, nil
}

// validateTxn checks a transaction before it is proposed, so that nothing
// invalid reaches the log.
func validateTxn(txn Txn) error {
	if len(txn) == 0 {
		return fmt.Errorf("%w: empty transaction", ErrInvalid)
	}
	if len(txn) > policy.MaxDocuments {
		return fmt.Errorf("%w: %d operations in one transaction, more than %d", ErrInvalid, len(txn), policy.MaxDocuments)
	}
	for i, op := range txn {
		switch op.Type {
		case OpPolicySet:
			if op.Doc == nil {
				return fmt.Errorf("%w: op %d: document missing", ErrInvalid, i)
			}
			if err := op.Doc.Validate(); err != nil {
				return fmt.Errorf("%w: %w", ErrInvalid, err)
			}
		case OpPolicyDelete:
			if op.Key == nil || op.Key.Name == "" {
				return fmt.Errorf("%w: op %d: key missing", ErrInvalid, i)
			}
			if _, err := policy.ParseKind(string(op.Key.Kind)); err != nil {
				return fmt.Errorf("%w: op %d: %w", ErrInvalid, i, err)
			}
		case OpKVSet, OpKVDelete:
			if err := validKVKey(op.KVKey); err != nil {
				return fmt.Errorf("%w: op %d: %w", ErrInvalid, i, err)
			}
			if len(op.Value) > MaxKVValue {
				return fmt.Errorf("%w: op %d: value of %d bytes is over the limit of %d", ErrInvalid, i, len(op.Value), MaxKVValue)
			}
		default:
			return fmt.Errorf("%w: op %d: type %q is unknown", ErrInvalid, i, op.Type)
		}
	}
	return nil
}

// MaxKVValue is the largest value of one key (512 KiB).
const MaxKVValue = 512 << 10

// SecretPrefix starts keys that never leave a server agent's process: they
// are not served over the RPC port, not returned by watches or lists, not
// cached on client agents. It is always in Config.PrivateKV.
const SecretPrefix = "secret/"

func validKVKey(k string) error {
	if k == "" || len(k) > 512 {
		return fmt.Errorf("key must be 1 to 512 bytes")
	}
	for _, c := range k {
		if c < 0x21 || c == 0x7f {
			return fmt.Errorf("key %q: control characters and spaces are not allowed", k)
		}
	}
	return nil
}
