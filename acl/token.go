package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"
)

// TokenType says how a token is authorized.
type TokenType string

// The token types.
const (
	// TypeClient tokens get what their policies grant, then the default
	// policy.
	TypeClient TokenType = "client"
	// TypeManagement tokens may do everything. The bootstrap token is one.
	TypeManagement TokenType = "management"
)

// Well-known IDs of the builtin token and policy that every State holds.
const (
	// AnonymousAccessorID is the token of requests that present none. It
	// links BuiltinCatalogReadPolicyID, so that DNS-like catalog reads stay
	// open; an operator may relink it (to nothing, to close them too).
	AnonymousAccessorID = "00000000-0000-0000-0000-000000000002"
	// BuiltinCatalogReadPolicyID is the builtin policy that reads every
	// service and node, and nothing else.
	BuiltinCatalogReadPolicyID = "00000000-0000-0000-0000-000000000001"
	// BuiltinCatalogReadPolicyName is its name.
	BuiltinCatalogReadPolicyName = "builtin-catalog-read"
)

// Limits on a token.
const (
	// MaxTokenPolicies is the most policies one token may link.
	MaxTokenPolicies = 64
	// MinTokenTTL is the shortest lifetime a token may be given: anything
	// shorter would be eaten by clock skew and the expiry leeway.
	MinTokenTTL = time.Minute
)

// Token is an ACL token as the store keeps it. The secret itself is never
// stored, only its SHA-256 hash: secrets are 256 random bits, so a fast hash
// is as good as a slow one (no dictionary can guess them, and a slow KDF
// would cost milliseconds a request where the budget is microseconds), and
// an unsalted hash lets the store index tokens by it.
type Token struct {
	// AccessorID is the token's public ID (a UUID): safe to log and to
	// show, it names the token in the API and in errors.
	AccessorID string `json:"accessor_id"`
	// SecretHash is SHA-256 of the secret; zero for the anonymous token,
	// which has no secret.
	SecretHash SecretHash `json:"secret_hash"`
	// Description is free text for operators, at most 512 bytes.
	Description string `json:"description,omitempty"`
	// Type is TypeClient or TypeManagement.
	Type TokenType `json:"type"`
	// Policies are the policies a client token links, by ID (the name is
	// kept for display and may be stale after a rename).
	Policies []PolicyLink `json:"policies,omitempty"`
	// ExpirationTime is when the token stops working; zero for never.
	ExpirationTime time.Time `json:"expiration_time,omitzero"`
	// CreateTime is when it was made.
	CreateTime time.Time `json:"create_time,omitzero"`
	// CreateIndex and ModifyIndex are the store indexes that created and
	// last changed the token.
	CreateIndex uint64 `json:"create_index,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
}

// PolicyLink names one policy of a token. A link written with only a name
// gets its ID from the store when the token is stored.
type PolicyLink struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// Expired reports whether the token has expired at now, allowing leeway
// for the clocks of the server that set the expiry and of this agent.
func (t *Token) Expired(now time.Time, leeway time.Duration) bool {
	return !t.ExpirationTime.IsZero() && now.After(t.ExpirationTime.Add(leeway))
}

// Validate checks a token's fields. The links' existence and the indexes
// are the store's to check.
func (t *Token) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: token %s: %s", ErrInvalidPolicy, t.AccessorID, fmt.Sprintf(format, args...))
	}
	if !validUUID(t.AccessorID) {
		return fmt.Errorf("%w: token accessor ID %q is not a UUID", ErrInvalidPolicy, truncate(t.AccessorID))
	}
	if t.AccessorID == AnonymousAccessorID {
		if t.SecretHash != (SecretHash{}) {
			return fail("the anonymous token has no secret")
		}
	} else if t.SecretHash == (SecretHash{}) {
		return fail("no secret hash")
	}
	switch t.Type {
	case TypeClient:
	case TypeManagement:
		if len(t.Policies) > 0 {
			return fail("a management token may do everything and links no policies")
		}
		if t.AccessorID == AnonymousAccessorID {
			return fail("the anonymous token cannot be a management token")
		}
	default:
		return fail("type %q is unknown (want %s or %s)", truncate(string(t.Type)), TypeClient, TypeManagement)
	}
	if len(t.Description) > MaxDescriptionLen {
		return fail("description is %d bytes, more than %d", len(t.Description), MaxDescriptionLen)
	}
	if len(t.Policies) > MaxTokenPolicies {
		return fail("links %d policies, more than %d", len(t.Policies), MaxTokenPolicies)
	}
	for i, l := range t.Policies {
		if l.ID == "" && l.Name == "" {
			return fail("policies[%d] has neither an ID nor a name", i)
		}
		if l.ID != "" && !validUUID(l.ID) {
			return fail("policies[%d]: ID %q is not a UUID", i, truncate(l.ID))
		}
	}
	if !t.ExpirationTime.IsZero() && !t.ExpirationTime.After(t.CreateTime) {
		return fail("expires at %s, not after its creation at %s", t.ExpirationTime.Format(time.RFC3339), t.CreateTime.Format(time.RFC3339))
	}
	return nil
}

// TokenSpec is what an operator asks of a new token.
type TokenSpec struct {
	// Type defaults to TypeClient.
	Type        TokenType
	Description string
	Policies    []PolicyLink
	// TTL is the token's lifetime, at least MinTokenTTL; 0 for a token
	// that never expires.
	TTL time.Duration
}

// NewToken mints a token to spec at now: a fresh accessor ID and secret. It
// returns the secret, which is shown once and then exists only with its
// holder; the Token keeps its hash. Indexes are left to the store.
func NewToken(spec TokenSpec, now time.Time) (*Token, string, error) {
	if spec.TTL < 0 || (spec.TTL > 0 && spec.TTL < MinTokenTTL) {
		return nil, "", fmt.Errorf("%w: token TTL %s: want 0 (never expires) or at least %s", ErrInvalidPolicy, spec.TTL, MinTokenTTL)
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, "", err
	}
	accessor, err := NewID()
	if err != nil {
		return nil, "", err
	}
	t := &Token{
		AccessorID:  accessor,
		SecretHash:  HashSecret(secret),
		Description: spec.Description,
		Type:        spec.Type,
		Policies:    append([]PolicyLink(nil), spec.Policies...),
		CreateTime:  now.UTC(),
	}
	if t.Type == "" {
		t.Type = TypeClient
	}
	if spec.TTL > 0 {
		t.ExpirationTime = t.CreateTime.Add(spec.TTL)
	}
	if err := t.Validate(); err != nil {
		return nil, "", err
	}
	return t, secret, nil
}

// The form of a secret: SecretPrefix, then SecretEncodedLen characters of
// unpadded base64url holding 32 random bytes. The prefix tells a secret from
// an accessor ID at a glance, and lets secret scanners find leaked ones.
const (
	SecretPrefix     = "mwt_"
	secretBytes      = 32
	SecretEncodedLen = 43
	// SecretLen is the length of every secret.
	SecretLen = len(SecretPrefix) + SecretEncodedLen
)

// NewSecret returns a fresh random secret.
func NewSecret() (string, error) {
	var b [secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("acl: new secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// SecretHash is SHA-256 of a secret. Its text form is hex.
type SecretHash [sha256.Size]byte

// HashSecret hashes a secret. It does not allocate.
func HashSecret(secret string) SecretHash {
	// A stack copy: converting the string itself would allocate.
	var buf [SecretLen]byte
	if len(secret) <= len(buf) {
		n := copy(buf[:], secret)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(secret))
}

// Equal compares two hashes in constant time.
func (h SecretHash) Equal(o SecretHash) bool { return subtle.ConstantTimeCompare(h[:], o[:]) == 1 }

// MarshalText writes the hash in hex.
func (h SecretHash) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(h)))
	hex.Encode(out, h[:])
	return out, nil
}

// UnmarshalText reads a hash in hex.
func (h *SecretHash) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(h) {
		return fmt.Errorf("%w: secret hash: want %d hex digits, got %d characters", ErrInvalidPolicy, 2*len(h), len(b))
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return fmt.Errorf("%w: secret hash: %v", ErrInvalidPolicy, err)
	}
	return nil
}

// NewID returns a random (version 4) UUID, for accessor and policy IDs.
func NewID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("acl: new ID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:]), nil
}

// validUUID reports whether s is a UUID in its canonical lowercase form.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
