package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/meshwork/meshwork/internal/atomicfile"
	"github.com/meshwork/meshwork/internal/clock"
)

// Keyring errors.
var (
	// ErrBadKey wraps every error about a key that is not base64 of 16, 24
	// or 32 bytes.
	ErrBadKey = errors.New("bad gossip encryption key")
	// ErrNoEncryption is returned by keyring operations on a node whose
	// gossip is not encrypted: encryption cannot be switched on live.
	ErrNoEncryption = errors.New("gossip encryption is not enabled")
	// ErrPrimaryKey is returned when asked to remove the primary key: first
	// make another key primary with UseKey.
	ErrPrimaryKey = errors.New("the primary key cannot be removed; make another key primary first")
	// ErrKeyringPartial is returned, with the full response, when some
	// members failed the operation or did not answer in time.
	ErrKeyringPartial = errors.New("keyring operation failed on some members")
	// ErrKeyringFile wraps errors reading or writing KeyringFile.
	ErrKeyringFile = errors.New("keyring file")
)

// Keyring operations, as they travel in queries.
const (
	opList    = "list"
	opInstall = "install"
	opUse     = "use"
	opRemove  = "remove"
)

// KeySize is the size of the keys GenerateKey makes (AES-256).
const KeySize = 32

// ParseKey decodes a gossip encryption key: standard base64 of 32 bytes
// (AES-256, what `meshwork keygen` makes), or of 16 or 24 bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadKey)
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %v", ErrBadKey, err)
	}
	if err := checkKeyLen(k); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return k, nil
}

// GenerateKey returns a new random 32-byte key, base64.
func GenerateKey() (string, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("gossip: generate key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// KeyringResponse is the cluster-wide result of a keyring operation.
type KeyringResponse struct {
	// Keys counts, for every key (base64), the members that have it
	// installed.
	Keys map[string]int `json:"keys"`
	// PrimaryKeys counts, for every key, the members that encrypt with it.
	PrimaryKeys map[string]int `json:"primary_keys"`
	// NumNodes is the number of members asked (live members and this one).
	NumNodes int `json:"num_nodes"`
	// NumResponses is the number that answered.
	NumResponses int `json:"num_responses"`
	// Errors holds, by member name, each member's error, including members
	// that did not answer in time.
	Errors map[string]string `json:"errors,omitempty"`

	// Whether the configured key (`encrypt`) and the keyring, which a
	// keyring file in the data dir may have set, are in step: a playbook
	// that rotates the key checks them after it changed `encrypt`.

	// ConfiguredEncrypt is the fingerprint (KeyFingerprint) of the
	// configured key of the agent that answered, never the key; "" when
	// it has none.
	ConfiguredEncrypt string `json:"configured_encrypt,omitempty"`
	// ConfiguredEncryptInRing tells whether that agent's keyring holds its
	// configured key.
	ConfiguredEncryptInRing bool `json:"configured_encrypt_in_ring"`
	// ConfiguredEncryptPrimary tells whether that agent encrypts with its
	// configured key: its keyring and its configuration are in step.
	ConfiguredEncryptPrimary bool `json:"configured_encrypt_primary"`
	// ConfiguredEncryptOutOfStep names every member whose configured key
	// is not its primary key, and why: "installed, not primary", "not
	// installed" or "not configured". Members of versions that do not
	// report it are left out. Empty when every member is in step.
	ConfiguredEncryptOutOfStep map[string]string `json:"configured_encrypt_out_of_step,omitempty"`
}

// Where a node's configured key stands in its keyring (queryResp.Configured).
const (
	configuredPrimary   = "primary"
	configuredInstalled = "installed, not primary"
	configuredAbsent    = "not installed"
	configuredUnset     = "not configured"
)

// SetConfiguredKey replaces the configured key (Config.Keyring's primary,
// the agent's `encrypt`) that the keyring is compared with, as a reload of
// the configuration does after a rotation: the keyring itself does not
// change. It is ErrNoEncryption on a node whose gossip is not encrypted
// (that needs a restart) and ErrBadKey for a malformed key; "" means none.
func (g *Gossip) SetConfiguredKey(key string) error {
	var k []byte
	if key != "" {
		var err error
		if k, err = ParseKey(key); err != nil {
			return fmt.Errorf("gossip: configured key: %w", err)
		}
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	if g.keyring == nil {
		return fmt.Errorf("gossip: configured key: %w", ErrNoEncryption)
	}
	g.configuredKey = k
	if st := g.configuredStatusLocked(); st != configuredPrimary {
		g.log.Warn("gossip configured key is not the primary key", "configured_encrypt", KeyFingerprint(key),
			"status", st, "used", KeyFingerprint(base64.StdEncoding.EncodeToString(g.keyring.GetPrimaryKey())))
	}
	return nil
}

// configuredStatusLocked says where the configured key stands in the
// keyring; "" without encryption. g.keyMu is held.
func (g *Gossip) configuredStatusLocked() string {
	switch {
	case g.keyring == nil:
		return ""
	case g.configuredKey == nil:
		return configuredUnset
	case bytes.Equal(g.keyring.GetPrimaryKey(), g.configuredKey):
		return configuredPrimary
	}
	for _, k := range g.keyring.GetKeys() {
		if bytes.Equal(k, g.configuredKey) {
			return configuredInstalled
		}
	}
	return configuredAbsent
}

// ListKeys asks every live member for its keys.
func (g *Gossip) ListKeys(ctx context.Context) (*KeyringResponse, error) {
	return g.keyringOp(ctx, opList, "")
}

// InstallKey adds key (base64) to every live member's keyring, and persists
// it. Members keep encrypting with their primary key.
func (g *Gossip) InstallKey(ctx context.Context, key string) (*KeyringResponse, error) {
	return g.keyringOp(ctx, opInstall, key)
}

// UseKey makes key, already installed everywhere, the primary key of every
// live member.
func (g *Gossip) UseKey(ctx context.Context, key string) (*KeyringResponse, error) {
	return g.keyringOp(ctx, opUse, key)
}

// RemoveKey removes key from every live member's keyring. The primary key
// cannot be removed (ErrPrimaryKey).
func (g *Gossip) RemoveKey(ctx context.Context, key string) (*KeyringResponse, error) {
	return g.keyringOp(ctx, opRemove, key)
}

// pendingQuery collects the answers to a query this node sent.
type pendingQuery struct {
	mu       sync.Mutex
	expected map[string]bool
	resps    map[string]queryResp
	done     chan struct{}
	closed   bool
}

func (q *pendingQuery) add(r queryResp) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.expected[r.Node] {
		// A member that joined after the query started: count it too.
		q.expected[r.Node] = true
	}
	q.resps[r.Node] = r
	if len(q.resps) >= len(q.expected) && !q.closed {
		q.closed = true
		close(q.done)
	}
}

func (q *pendingQuery) finish() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
}

func (g *Gossip) keyringOp(ctx context.Context, op, keyStr string) (*KeyringResponse, error) {
	fail := func(err error) (*KeyringResponse, error) {
		return nil, fmt.Errorf("gossip: keyring %s: %w", op, err)
	}
	var key []byte
	if op != opList {
		k, err := ParseKey(keyStr)
		if err != nil {
			return fail(err)
		}
		key = k
	}
	if g.ml.Load() == nil {
		return fail(ErrNotStarted)
	}
	if g.keyring == nil {
		return fail(ErrNoEncryption)
	}
	if op == opRemove && bytes.Equal(g.keyring.GetPrimaryKey(), key) {
		return fail(ErrPrimaryKey)
	}

	id := mrand.Uint64()
	q := &pendingQuery{
		expected: map[string]bool{g.cfg.NodeName: true},
		resps:    make(map[string]queryResp),
		done:     make(chan struct{}),
	}
	g.mu.Lock()
	if g.state != stateRunning {
		g.mu.Unlock()
		return fail(ErrClosed)
	}
	now := g.clock.Now()
	for _, p := range g.peers.peers {
		if p.known && p.status(now).Reachable() {
			q.expected[p.name] = true
		}
	}
	g.queries[id] = q
	g.seenQueries[id] = now
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.queries, id)
		g.mu.Unlock()
	}()

	// Apply here first: for "use", the query then goes out encrypted with
	// the new key, which every member has installed.
	q.add(g.applyKeyOp(id, op, key))
	msg := mustEncode(msgQuery, &query{ID: id, Origin: g.cfg.NodeName, Op: op, Key: key})
	g.queue.QueueBroadcast(&namedBroadcast{name: fmt.Sprintf("q/%d", id), msg: msg})

	timeout, timer := clock.After(g.clock, g.cfg.QueryTimeout)
	defer timer.Stop()
	select {
	case <-q.done:
	case <-timeout:
	case <-ctx.Done():
	}

	q.mu.Lock()
	resp := &KeyringResponse{
		Keys:         map[string]int{},
		PrimaryKeys:  map[string]int{},
		NumNodes:     len(q.expected),
		NumResponses: len(q.resps),
		Errors:       map[string]string{},
	}
	for name := range q.expected {
		r, ok := q.resps[name]
		if !ok {
			resp.Errors[name] = "no answer in time"
			continue
		}
		if r.Err != "" {
			resp.Errors[name] = r.Err
		}
		for _, k := range r.Keys {
			resp.Keys[base64.StdEncoding.EncodeToString(k)]++
		}
		if len(r.Primary) > 0 {
			resp.PrimaryKeys[base64.StdEncoding.EncodeToString(r.Primary)]++
		}
		if r.Configured != "" && r.Configured != configuredPrimary {
			if resp.ConfiguredEncryptOutOfStep == nil {
				resp.ConfiguredEncryptOutOfStep = map[string]string{}
			}
			resp.ConfiguredEncryptOutOfStep[name] = r.Configured
		}
	}
	q.mu.Unlock()
	g.keyMu.Lock()
	if g.configuredKey != nil {
		resp.ConfiguredEncrypt = KeyFingerprint(base64.StdEncoding.EncodeToString(g.configuredKey))
	}
	own := g.configuredStatusLocked()
	g.keyMu.Unlock()
	resp.ConfiguredEncryptPrimary = own == configuredPrimary
	resp.ConfiguredEncryptInRing = own == configuredPrimary || own == configuredInstalled
	if len(resp.Errors) == 0 {
		resp.Errors = nil
		return resp, nil
	}
	if err := ctx.Err(); err != nil && resp.NumResponses < resp.NumNodes {
		return resp, fmt.Errorf("gossip: keyring %s: %w", op, err)
	}
	return resp, fmt.Errorf("gossip: keyring %s: %w: %s", op, ErrKeyringPartial, summarizeErrors(resp.Errors))
}

func summarizeErrors(errs map[string]string) string {
	names := make([]string, 0, len(errs))
	for n := range errs {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, n+": "+errs[n])
	}
	return strings.Join(parts, "; ")
}

// applyKeyOp applies a keyring operation to this node and returns its answer.
func (g *Gossip) applyKeyOp(id uint64, op string, key []byte) queryResp {
	r := queryResp{ID: id, Node: g.cfg.NodeName}
	result := "ok"
	defer func() { g.metrics.keyringOps.WithLabelValues(op, result).Inc() }()
	if g.keyring == nil {
		r.Err = ErrNoEncryption.Error()
		result = "error"
		return r
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	var err error
	switch op {
	case opInstall:
		err = g.keyring.AddKey(key)
	case opUse:
		err = g.keyring.UseKey(key)
	case opRemove:
		if bytes.Equal(g.keyring.GetPrimaryKey(), key) {
			err = ErrPrimaryKey
		} else {
			err = g.keyring.RemoveKey(key)
		}
	}
	if err == nil && op != opList {
		err = g.persistKeyringLocked()
		g.log.Info("gossip keyring changed", "op", op, "query", id)
	}
	if err != nil {
		r.Err = err.Error()
		result = "error"
		g.log.Warn("gossip keyring operation failed", "op", op, "err", err)
	}
	r.Keys = g.keyring.GetKeys()
	r.Primary = g.keyring.GetPrimaryKey()
	r.Configured = g.configuredStatusLocked()
	return r
}

// onQuery runs a keyring query from another member and answers it.
func (g *Gossip) onQuery(q *query, raw []byte) {
	g.mu.Lock()
	if _, seen := g.seenQueries[q.ID]; seen || g.state != stateRunning {
		g.mu.Unlock()
		return
	}
	g.seenQueries[q.ID] = g.clock.Now()
	origin := g.peers.get(q.Origin)
	var to memberlist.Node
	if origin != nil && origin.known {
		to = origin.node
	}
	g.mu.Unlock()

	// Pass it on, so that it reaches members the origin's own
	// retransmissions miss.
	g.queue.QueueBroadcast(&namedBroadcast{name: fmt.Sprintf("q/%d", q.ID), msg: raw})
	r := g.applyKeyOp(q.ID, q.Op, q.Key)
	if to.Name == "" {
		g.log.Warn("gossip keyring query from an unknown member, not answered", "origin", q.Origin)
		return
	}
	g.sendAsync(to, msgQueryResp, mustEncode(msgQueryResp, &r))
}

func (g *Gossip) onQueryResp(r *queryResp) {
	g.mu.Lock()
	q := g.queries[r.ID]
	g.mu.Unlock()
	if q != nil {
		q.add(*r)
	}
}

// loadKeyring returns the keys to start with: KeyringFile's when it exists,
// else Config.Keyring.
func (g *Gossip) loadKeyring() ([][]byte, error) {
	var fromCfg [][]byte
	for _, s := range g.cfg.Keyring {
		k, err := ParseKey(s)
		if err != nil {
			return nil, err
		}
		fromCfg = append(fromCfg, k)
	}
	if len(fromCfg) > 0 {
		g.configuredKey = fromCfg[0]
	}
	if g.cfg.KeyringFile == "" {
		return fromCfg, nil
	}
	keys, err := ReadKeyringFile(g.cfg.KeyringFile)
	if errors.Is(err, os.ErrNotExist) {
		return fromCfg, nil
	}
	if err != nil {
		return nil, err
	}
	if len(fromCfg) > 0 && !bytes.Equal(fromCfg[0], keys[0]) {
		g.warnOverride(fromCfg[0], keys)
	}
	return keys, nil
}

// warnOverride says, at start, that the keyring file's primary key (keys
// from KeyringFile, primary first) is used instead of the configured key,
// naming both by fingerprint, and how to bring them in step.
func (g *Gossip) warnOverride(configured []byte, keys [][]byte) {
	fp := func(k []byte) string { return KeyFingerprint(base64.StdEncoding.EncodeToString(k)) }
	inRing := slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, configured) })
	fix := "set encrypt to the key in use; or, to use the configured key, `meshwork keyring install` and then `meshwork keyring use` it on the cluster. " +
		"Deleting the file makes this agent encrypt with the configured key, which the other members may not hold"
	if inRing {
		fix = "set encrypt to the key in use; or make the configured key primary on the cluster with `meshwork keyring use`"
	}
	g.log.Warn("gossip keyring file overrides the configured keys",
		"file", g.cfg.KeyringFile,
		"used", fp(keys[0]),
		"configured_encrypt", fp(configured),
		"configured_encrypt_in_ring", inRing,
		"reason", "the file holds the result of rotations made after the configuration was written",
		"fix", fix)
}

// ReadKeyringFile reads a keyring file: a JSON array of base64 keys, the
// primary first.
func ReadKeyringFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrKeyringFile, path, err)
	}
	var strs []string
	if err := json.Unmarshal(b, &strs); err != nil {
		return nil, fmt.Errorf("%w %s: not a JSON array of base64 keys: %v", ErrKeyringFile, path, err)
	}
	if len(strs) == 0 {
		return nil, fmt.Errorf("%w %s: no keys", ErrKeyringFile, path)
	}
	keys := make([][]byte, 0, len(strs))
	for i, s := range strs {
		k, err := ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("%w %s: key %d: %w", ErrKeyringFile, path, i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (g *Gossip) persistKeyring() error {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	return g.persistKeyringLocked()
}

// persistKeyringLocked writes the keyring to KeyringFile, atomically and
// readable by the agent's user only.
func (g *Gossip) persistKeyringLocked() error {
	path := g.cfg.KeyringFile
	if path == "" || g.keyring == nil {
		return nil
	}
	keys := g.keyring.GetKeys() // primary first
	strs := make([]string, len(keys))
	for i, k := range keys {
		strs[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, _ := json.MarshalIndent(strs, "", "  ")
	b = append(b, '\n')
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("%w %s: %w", ErrKeyringFile, path, err)
	}
	return nil
}
