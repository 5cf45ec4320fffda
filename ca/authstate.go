package ca

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"go.step.sm/crypto/jose"
)

// stateVersion is the format of the value at KeyAuthority.
const stateVersion = 1

// Purposes bound to sealed keys (see seal).
const (
	purposeRootKey        = "meshwork-ca/root-key"
	purposeIssuerKey      = "meshwork-ca/issuer-key"
	purposeProvisionerKey = "meshwork-ca/provisioner-key"
)

// authorityState is the value at KeyAuthority: everything a server needs to
// sign. Private keys are sealed with the state key.
type authorityState struct {
	Version     int    `json:"version"`
	TrustDomain string `json:"trust_domain"`
	// Generation counts roots: the first root is generation 1.
	Generation int `json:"generation"`
	// Roots are the trusted roots, oldest first.
	Roots []rootEntry `json:"roots"`
	// Issuer is the intermediate new leaves are signed with.
	Issuer issuerEntry `json:"issuer"`
	// Provisioner is the JWK provisioner of bootstrap tokens.
	Provisioner provisionerEntry `json:"provisioner"`
	// Rotation is set while a root rotation is in progress.
	Rotation *rotationState `json:"rotation,omitempty"`
	// Retired lists roots that were retired, for the record.
	Retired []retiredRoot `json:"retired,omitempty"`
}

type rootEntry struct {
	Generation int    `json:"generation"`
	Cert       []byte `json:"cert"`       // DER
	SealedKey  []byte `json:"sealed_key"` // PKCS#8, sealed
}

type issuerEntry struct {
	// Chain is the intermediate signed by its own root, followed during a
	// rotation by the same intermediate cross-signed by the previous root.
	Chain     [][]byte `json:"chain"`
	SealedKey []byte   `json:"sealed_key"`
	// Root is the fingerprint of the root Chain[0] was signed by.
	Root string `json:"root"`
}

type provisionerEntry struct {
	Name      string          `json:"name"`
	PublicKey json.RawMessage `json:"public_key"` // JWK
	SealedKey []byte          `json:"sealed_key"` // private JWK, sealed
}

type rotationState struct {
	From      string    `json:"from"`
	To        string    `json:"to"`
	StartedAt time.Time `json:"started_at"`
}

type retiredRoot struct {
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
	RetiredAt   time.Time `json:"retired_at"`
}

// leafRecord is the value at KeyLeafPrefix+node: the latest leaf the CA
// issued to that node. Root rotation reads it to know who still holds a leaf
// under the old root.
type leafRecord struct {
	Serial   string    `json:"serial"`
	Root     string    `json:"root"`
	NotAfter time.Time `json:"not_after"`
	IssuedAt time.Time `json:"issued_at"`
	Services []string  `json:"services,omitempty"`
}

// loadedState is authorityState with its certificates parsed and its keys
// opened, as one server holds it in memory.
type loadedState struct {
	raw        *authorityState
	index      uint64
	roots      []*x509.Certificate
	chain      []*x509.Certificate
	issuerKey  *ecdsa.PrivateKey
	provPublic *jose.JSONWebKey
}

func decodeAuthorityState(b []byte) (*authorityState, error) {
	var st authorityState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("CA state is malformed: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("CA state version %d, this agent reads %d", st.Version, stateVersion)
	}
	if len(st.Roots) == 0 || len(st.Issuer.Chain) == 0 {
		return nil, fmt.Errorf("CA state holds no root or no issuer")
	}
	return &st, nil
}

// load parses st and opens the issuer key with stateKey.
func loadState(st *authorityState, index uint64, stateKey []byte) (*loadedState, error) {
	ls := &loadedState{raw: st, index: index}
	for i, r := range st.Roots {
		c, err := x509.ParseCertificate(r.Cert)
		if err != nil {
			return nil, fmt.Errorf("CA state: root %d: %w", i, err)
		}
		ls.roots = append(ls.roots, c)
	}
	for i, der := range st.Issuer.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("CA state: issuer chain %d: %w", i, err)
		}
		ls.chain = append(ls.chain, c)
	}
	keyDER, err := open(stateKey, purposeIssuerKey, st.Issuer.SealedKey)
	if err != nil {
		return nil, err
	}
	if ls.issuerKey, err = parseKey(keyDER); err != nil {
		return nil, fmt.Errorf("CA state: issuer key: %w", err)
	}
	if !ls.issuerKey.PublicKey.Equal(ls.chain[0].PublicKey) {
		return nil, fmt.Errorf("CA state: the issuer key does not match the issuer certificate")
	}
	ls.provPublic = new(jose.JSONWebKey)
	if err := json.Unmarshal(st.Provisioner.PublicKey, ls.provPublic); err != nil {
		return nil, fmt.Errorf("CA state: provisioner key: %w", err)
	}
	return ls, nil
}

// activeRoot is the root the issuer's own chain leads to.
func (ls *loadedState) activeRoot() *x509.Certificate {
	for _, r := range ls.roots {
		if Fingerprint(r) == ls.raw.Issuer.Root {
			return r
		}
	}
	return ls.roots[len(ls.roots)-1]
}

// bundle is the public view of the state.
func (ls *loadedState) bundle() *Bundle {
	b := &Bundle{
		TrustDomain: ls.raw.TrustDomain,
		Roots:       ls.roots,
		ActiveRoot:  ls.raw.Issuer.Root,
		Generation:  ls.index,
	}
	if ls.raw.Rotation != nil {
		b.Rotating = true
	}
	return b.init()
}
