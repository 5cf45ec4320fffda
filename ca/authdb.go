package ca

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"github.com/smallstep/certificates/db"
	"go.step.sm/crypto/jose"
)

// tokenLeeway is how long after its expiry a token ID is kept in the ledger:
// smallstep accepts a token up to one minute past its expiry.
const tokenLeeway = 2 * time.Minute

// casAttempts bounds compare-and-set retry loops under contention.
const casAttempts = 32

// stateDB is the smallstep AuthDB of the embedded authority. Its one real
// duty is UseToken: the ledger of used bootstrap tokens lives in the
// replicated state, so that a token used on one server is refused by every
// other, and by a new leader. The rest of AuthDB (revocation, SSH) is not
// used by the mesh.
type stateDB struct {
	state   StateStore
	now     func() time.Time
	timeout time.Duration
}

var _ db.AuthDB = (*stateDB)(nil)

// tokenLedger is the value of one ledger shard: token ID → expiry (Unix
// seconds).
type tokenLedger struct {
	Used map[string]int64 `json:"used"`
}

// tokenShards spreads the ledger over keys, so that concurrent bootstraps
// rarely meet in one compare-and-set and each value stays small.
const tokenShards = 64

// tokenKey is the ledger shard of token ID id.
func tokenKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("%s/%02x", KeyTokens, sum[0]%tokenShards)
}

// UseToken records id as used and reports whether it was unused before. A
// reused token gives an error wrapping ErrTokenUsed, which smallstep passes
// through its own wrapping so that callers can tell it apart.
func (d *stateDB) UseToken(id, tok string) (bool, error) {
	if id == "" {
		return false, fmt.Errorf("%w: the token has no ID (jti)", ErrBadToken)
	}
	exp := d.now().Add(time.Hour) // a token never lives longer
	if jwt, err := jose.ParseSigned(tok); err == nil {
		var c jose.Claims
		if jwt.UnsafeClaimsWithoutVerification(&c) == nil && c.Expiry != nil {
			exp = c.Expiry.Time()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	key := tokenKey(id)
	for range casAttempts {
		val, idx, err := d.state.Get(ctx, key)
		if err != nil {
			return false, fmt.Errorf("token ledger: %w", err)
		}
		var l tokenLedger
		if val != nil {
			if err := json.Unmarshal(val, &l); err != nil {
				return false, fmt.Errorf("token ledger is malformed: %w", err)
			}
		}
		if _, used := l.Used[id]; used {
			return false, fmt.Errorf("%w (token ID %s)", ErrTokenUsed, id)
		}
		// Forget tokens that can no longer be presented.
		cut := d.now().Add(-tokenLeeway).Unix()
		for k, e := range l.Used {
			if e < cut {
				delete(l.Used, k)
			}
		}
		if l.Used == nil {
			l.Used = map[string]int64{}
		}
		l.Used[id] = exp.Unix()
		b, _ := json.Marshal(l)
		err = d.state.CAS(ctx, key, b, idx)
		if err == nil {
			return true, nil
		}
		if !isConflict(err) {
			return false, fmt.Errorf("token ledger: %w", err)
		}
	}
	return false, fmt.Errorf("token ledger: %w after %d attempts", ErrConflict, casAttempts)
}

func (d *stateDB) IsRevoked(string) (bool, error)                   { return false, nil }
func (d *stateDB) IsSSHRevoked(string) (bool, error)                { return false, nil }
func (d *stateDB) Revoke(*db.RevokedCertificateInfo) error          { return db.ErrNotImplemented }
func (d *stateDB) RevokeSSH(*db.RevokedCertificateInfo) error       { return db.ErrNotImplemented }
func (d *stateDB) GetCertificate(string) (*x509.Certificate, error) { return nil, db.ErrNotImplemented }
func (d *stateDB) IsSSHHost(string) (bool, error)                   { return false, nil }
func (d *stateDB) GetSSHHostPrincipals() ([]string, error)          { return nil, db.ErrNotImplemented }
func (d *stateDB) Shutdown() error                                  { return nil }
