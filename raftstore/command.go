package raftstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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
	// opWriteID names the transaction it starts: its idempotency key (ID)
	// and a digest of its operations (Sum). It changes nothing; the state
	// machine answers a transaction whose key it has already applied with
	// the first answer (see dedup.go). It rides inside the transaction, so
	// that the batchers, the RPC and the log carry it unchanged.
	opWriteID OpType = "write.id"
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
	// ID and Sum are those of opWriteID: the idempotency key and the
	// digest of the operations that follow.
	ID  string `json:"id,omitempty"`
	Sum string `json:"sum,omitempty"`
	// ACL is the operand of the ACL operations (acl_fsm.go).
	ACL *ACLOp `json:"acl,omitempty"`
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
// invalid reaches the log. An opWriteID may only come first.
func validateTxn(txn Txn) error {
	id, ops := splitWriteID(txn)
	if id != nil {
		if err := ValidateIdempotencyKey(id.ID); err != nil {
			return err
		}
		if len(id.Sum) != sumLen {
			return fmt.Errorf("%w: write id: digest %q is not %d hex digits", ErrInvalid, id.Sum, sumLen)
		}
	}
	if len(ops) == 0 {
		return fmt.Errorf("%w: empty transaction", ErrInvalid)
	}
	if len(ops) > policy.MaxDocuments {
		return fmt.Errorf("%w: %d operations in one transaction, more than %d", ErrInvalid, len(ops), policy.MaxDocuments)
	}
	for i, op := range ops {
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
		case OpACLPolicySet, OpACLPolicyDelete, OpACLTokenSet, OpACLTokenDelete, OpACLBootstrap:
			if err := validateACLOp(i, op, len(ops)); err != nil {
				return err
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

// splitWriteID returns the opWriteID that starts txn (nil when none) and
// the operations after it.
func splitWriteID(txn Txn) (*Op, Txn) {
	if len(txn) > 0 && txn[0].Type == opWriteID {
		return &txn[0], txn[1:]
	}
	return nil, txn
}

// withWriteID returns txn started by an opWriteID naming it key, unless it
// has one already.
func withWriteID(txn Txn, key string) (Txn, error) {
	if id, _ := splitWriteID(txn); id != nil {
		return txn, nil
	}
	b, err := json.Marshal(txn)
	if err != nil {
		return nil, fmt.Errorf("%w: encode transaction: %v", ErrInvalid, err)
	}
	sum := sha256.Sum256(b)
	return append(Txn{{Type: opWriteID, ID: key, Sum: hex.EncodeToString(sum[:sumLen/2])}}, txn...), nil
}

// sumLen is the length of a write digest: 128 bits of SHA-256, in hex.
const sumLen = 32

// MaxIdempotencyKey is the longest idempotency key, in bytes.
const MaxIdempotencyKey = 128

// ValidateIdempotencyKey checks a caller's idempotency key: 1 to 128
// printable ASCII characters without spaces. The error wraps ErrInvalid.
func ValidateIdempotencyKey(key string) error {
	if key == "" || len(key) > MaxIdempotencyKey {
		return fmt.Errorf("%w: idempotency key must be 1 to %d characters, got %d", ErrInvalid, MaxIdempotencyKey, len(key))
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: idempotency key %q: only printable ASCII without spaces is allowed", ErrInvalid, key)
		}
	}
	return nil
}

// NewIdempotencyKey returns a random key (128 bits, base64url).
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

type idempotencyKeyCtx struct{}

// WithIdempotencyKey returns ctx carrying key for the write made with it,
// like a request ID: Node.Apply (and the helpers built on it) send the
// write under that key, so a write retried with the same key is applied at
// most once and answered with its first result. A key names one write: the
// same key with other operations is refused (ErrInvalid). Without a key,
// Node.Apply makes one, reused across its own retries only.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKeyCtx{}, key)
}

// IdempotencyKey returns the key WithIdempotencyKey put in ctx, or "".
func IdempotencyKey(ctx context.Context) string {
	k, _ := ctx.Value(idempotencyKeyCtx{}).(string)
	return k
}
