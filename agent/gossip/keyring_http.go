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

// Where the HTTP API mounts the keyring endpoints.
const (
	// KeyringPath lists the keys (GET) and removes one (DELETE).
	KeyringPath = "/v1/operator/keyring"
	// KeyringInstallPath installs a key (PUT).
	KeyringInstallPath = KeyringPath + "/install"
	// KeyringUsePath makes an installed key the primary one (PUT).
	KeyringUsePath = KeyringPath + "/use"
)

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

// KeyRequest is the body of the keyring's writes: install, use and remove.
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

// RegisterKeyringAPI mounts the keyring endpoints on the agent's HTTP API:
// listing needs operator:read on keyring, changes operator:write.
//
//	GET    /v1/operator/keyring           list the keys of every member
//	PUT    /v1/operator/keyring/install   install {"key": "..."} on every member
//	PUT    /v1/operator/keyring/use       make {"key": "..."} every member's primary key
//	DELETE /v1/operator/keyring           remove {"key": "..."} from every member
//
// Each answers a KeyringResponse whose keys are fingerprints
// (KeyFingerprint), never the keys themselves, or an error
// (httpjson.ErrorBody): 400 "invalid" for a bad body or key,
// "encryption_disabled" or "primary_key" for what the keyring refuses; 500
// "keyring_partial" when some members failed, naming each; 503 "not_ready"
// when gossip is not running.
//
// POST /v1/operator/keyring (install) and PUT /v1/operator/keyring (use),
// the routes before the /install and /use paths, are kept for one release
// as deprecated aliases (httpjson.Deprecated).
func RegisterKeyringAPI(op KeyringOperator, mount acl.MountFunc) error {
	read := acl.Require(acl.ResourceOperator, acl.OperatorKeyring, acl.Read)
	write := acl.Require(acl.ResourceOperator, acl.OperatorKeyring, acl.Write)
	list := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := op.ListKeys(r.Context())
		writeKeyringAnswer(w, resp, err)
	})
	install, use, remove := keyChange(op.InstallKey), keyChange(op.UseKey), keyChange(op.RemoveKey)
	return errors.Join(
		mount("GET "+KeyringPath, read, list),
		mount("PUT "+KeyringInstallPath, write, install),
		mount("PUT "+KeyringUsePath, write, use),
		mount("DELETE "+KeyringPath, write, remove),
		mount("POST "+KeyringPath, write, httpjson.Deprecated{Successor: "PUT " + KeyringInstallPath, Handler: install}),
		mount("PUT "+KeyringPath, write, httpjson.Deprecated{Successor: "PUT " + KeyringUsePath, Handler: use}),
	)
}

// NewKeyringHandler serves the routes of RegisterKeyringAPI on a handler of
// its own, with no access control: for tests and tools. The agent mounts
// RegisterKeyringAPI on its HTTP API, which enforces the ACLs.
func NewKeyringHandler(op KeyringOperator) http.Handler {
	mux := http.NewServeMux()
	if err := RegisterKeyringAPI(op, acl.MountAllowAll(mux)); err != nil {
		panic(err) // fixed routes on an empty mux
	}
	return httpjson.Mux(mux)
}

// keyChange serves a write of the keyring: a KeyRequest body, then change.
func keyChange(change func(ctx context.Context, key string) (*KeyringResponse, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body KeyRequest
		if err := httpjson.Decode(r, &body); err != nil {
			httpjson.CodedError(w, http.StatusBadRequest, httpjson.CodeInvalid, err)
			return
		}
		if _, err := ParseKey(body.Key); err != nil {
			httpjson.CodedError(w, http.StatusBadRequest, httpjson.CodeInvalid, fmt.Errorf("field \"key\": %w", err))
			return
		}
		resp, err := change(r.Context(), body.Key)
		writeKeyringAnswer(w, resp, err)
	})
}

// writeKeyringAnswer answers a keyring operation's result.
func writeKeyringAnswer(w http.ResponseWriter, resp *KeyringResponse, err error) {
	switch {
	case err == nil:
		httpjson.Write(w, http.StatusOK, withFingerprints(resp))
	case errors.Is(err, ErrBadKey):
		httpjson.CodedError(w, http.StatusBadRequest, httpjson.CodeInvalid, err)
	case errors.Is(err, ErrNoEncryption):
		httpjson.CodedError(w, http.StatusBadRequest, httpjson.CodeEncryptionDisabled, err)
	case errors.Is(err, ErrPrimaryKey):
		httpjson.CodedError(w, http.StatusBadRequest, httpjson.CodePrimaryKey, err)
	case errors.Is(err, ErrNotStarted), errors.Is(err, ErrClosed):
		httpjson.CodedError(w, http.StatusServiceUnavailable, httpjson.CodeNotReady, err)
	case errors.Is(err, ErrKeyringPartial):
		httpjson.CodedError(w, http.StatusInternalServerError, httpjson.CodeKeyringPartial, err)
	default:
		httpjson.CodedError(w, http.StatusInternalServerError, httpjson.CodeInternal, err)
	}
}
