package gossip

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// KeyringPath is where the HTTP API mounts the keyring endpoint.
const KeyringPath = "/v1/operator/keyring"

// KeyringOperator runs keyring operations across the cluster. *Gossip
// implements it. Every method is safe for concurrent use and blocks until
// every live member answered, the query timeout passed, or ctx ended; on
// ErrKeyringPartial it still returns the response.
type KeyringOperator interface {
	ListKeys(ctx context.Context) (*KeyringResponse, error)
	InstallKey(ctx context.Context, key string) (*KeyringResponse, error)
	UseKey(ctx context.Context, key string) (*KeyringResponse, error)
	RemoveKey(ctx context.Context, key string) (*KeyringResponse, error)
}

// KeyRequest is the body of POST, PUT and DELETE on KeyringPath.
type KeyRequest struct {
	// Key is a base64 gossip encryption key.
	Key string `json:"key"`
}

// KeyFingerprint names a gossip key (base64) without revealing it:
// "sha256:" and the first 16 hex digits of the SHA-256 of the key's bytes.
// The keyring API answers fingerprints, never keys; an operator who holds
// a key computes its fingerprint with `meshwork keyring fingerprint`.
func KeyFingerprint(key string) string {
	b, err := ParseKey(key)
	if err != nil {
		b = []byte(key)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// withFingerprints returns resp with every key replaced by its fingerprint.
func withFingerprints(resp *KeyringResponse) *KeyringResponse {
	if resp == nil {
		return nil
	}
	out := *resp
	fp := func(m map[string]int) map[string]int {
		if m == nil {
			return nil
		}
		o := make(map[string]int, len(m))
		for k, n := range m {
			o[KeyFingerprint(k)] += n
		}
		return o
	}
	out.Keys, out.PrimaryKeys = fp(resp.Keys), fp(resp.PrimaryKeys)
	return &out
}

// RegisterKeyringAPI mounts the keyring endpoint on the agent's HTTP API:
// listing needs operator:read on keyring, changes operator:write.
func RegisterKeyringAPI(op KeyringOperator, mount acl.MountFunc) error {
	h := NewKeyringHandler(op)
	read := acl.Require(acl.ResourceOperator, acl.OperatorKeyring, acl.Read)
	write := acl.Require(acl.ResourceOperator, acl.OperatorKeyring, acl.Write)
	return errors.Join(
		mount("GET "+KeyringPath, read, h),
		mount("POST "+KeyringPath, write, h),
		mount("PUT "+KeyringPath, write, h),
		mount("DELETE "+KeyringPath, write, h),
	)
}

// NewKeyringHandler serves KeyringPath:
//
//	GET    list the keys of every member
//	POST   install {"key": "..."} on every member
//	PUT    use {"key": "..."} as every member's primary key
//	DELETE remove {"key": "..."} from every member
//
// It answers a KeyringResponse whose keys are fingerprints (KeyFingerprint),
// never the keys themselves, or an httpjson error: 400 for a bad body or
// key, or for a request the keyring refuses (no encryption, removing the
// primary key); 500 when some members failed, naming each; 503 when gossip
// is not running.
func NewKeyringHandler(op KeyringOperator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var (
			resp *KeyringResponse
			err  error
		)
		switch r.Method {
		case http.MethodGet:
			resp, err = op.ListKeys(r.Context())
		case http.MethodPost, http.MethodPut, http.MethodDelete:
			var body KeyRequest
			if err := httpjson.Decode(r, &body); err != nil {
				httpjson.Error(w, http.StatusBadRequest, err)
				return
			}
			if _, err := ParseKey(body.Key); err != nil {
				httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("field \"key\": %w", err))
				return
			}
			switch r.Method {
			case http.MethodPost:
				resp, err = op.InstallKey(r.Context(), body.Key)
			case http.MethodPut:
				resp, err = op.UseKey(r.Context(), body.Key)
			default:
				resp, err = op.RemoveKey(r.Context(), body.Key)
			}
		default:
			w.Header().Set("Allow", "GET, POST, PUT, DELETE")
			httpjson.Error(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s", r.Method, KeyringPath))
			return
		}
		switch {
		case err == nil:
			httpjson.Write(w, http.StatusOK, withFingerprints(resp))
		case errors.Is(err, ErrBadKey), errors.Is(err, ErrNoEncryption), errors.Is(err, ErrPrimaryKey):
			httpjson.Error(w, http.StatusBadRequest, err)
		case errors.Is(err, ErrNotStarted), errors.Is(err, ErrClosed):
			httpjson.Error(w, http.StatusServiceUnavailable, err)
		default:
			httpjson.Error(w, http.StatusInternalServerError, err)
		}
	})
}
