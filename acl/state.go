package acl

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Caps on the whole ACL state, so that a runaway script cannot grow every
// server's memory without bound.
const (
	// MaxTokens is the most tokens the state holds.
	MaxTokens = 100_000
	// MaxPolicies is the most policies the state holds.
	MaxPolicies = 10_000
)

// State is the ACL tables at one index, and the rules of every change to
// them. It is the logic every Store shares: MemStore wraps it with a lock,
// and the Raft FSM applies each committed write to its own State at the
// entry's index, so that every server makes the same decision. It is not
// safe for concurrent use; its owner locks.
//
// Tokens and policies handed in are copied; those handed out are the
// state's own and must not be modified.
type State struct {
	index          uint64
	bootstrapIndex uint64
	tokens         map[string]*Token // by accessor ID
	bySecret       map[SecretHash]*Token
	policies       map[string]*Policy // by ID
	byName         map[string]*Policy // by lower-case name
}

// NewState returns a state at index 0 holding only the builtins: the
// anonymous token and the catalog-read policy it links.
func NewState() *State {
	s := &State{
		tokens:   map[string]*Token{},
		bySecret: map[SecretHash]*Token{},
		policies: map[string]*Policy{},
		byName:   map[string]*Policy{},
	}
	s.putPolicy(builtinCatalogRead())
	s.putToken(builtinAnonymous())
	return s
}

func builtinCatalogRead() *Policy {
	return &Policy{
		ID:          BuiltinCatalogReadPolicyID,
		Name:        BuiltinCatalogReadPolicyName,
		Description: "Reads every service and node of the catalog, and nothing else: what DNS answers anyway.",
		Rules: Rules{
			ServicePrefix: map[string]Access{"": Read},
			NodePrefix:    map[string]Access{"": Read},
		},
	}
}

func builtinAnonymous() *Token {
	return &Token{
		AccessorID:  AnonymousAccessorID,
		Description: "Anonymous: the token of requests that present none.",
		Type:        TypeClient,
		Policies:    []PolicyLink{{ID: BuiltinCatalogReadPolicyID, Name: BuiltinCatalogReadPolicyName}},
	}
}

// Clone returns a copy of the state that changes on its own: the tables
// are copied, the tokens and policies (never changed in place) are shared.
// A Raft state machine that publishes immutable states clones the state
// before it applies a write, at the cost of one copy of the tables.
func (s *State) Clone() *State {
	return &State{
		index:          s.index,
		bootstrapIndex: s.bootstrapIndex,
		tokens:         maps.Clone(s.tokens),
		bySecret:       maps.Clone(s.bySecret),
		policies:       maps.Clone(s.policies),
		byName:         maps.Clone(s.byName),
	}
}

// Touch moves the state to index without changing anything else, as a
// Raft entry that reindexes a restored state does: whoever follows the
// state by its index then sees it as new.
func (s *State) Touch(index uint64) error {
	if err := s.advance("touch", index); err != nil {
		return err
	}
	s.index = index
	return nil
}

// Index is the index of the last change.
func (s *State) Index() uint64 { return s.index }

// BootstrapIndex is the index at which the last bootstrap happened; 0 if
// none has.
func (s *State) BootstrapIndex() uint64 { return s.bootstrapIndex }

// Token returns the token with accessorID, or ErrNotFound.
func (s *State) Token(accessorID string) (*Token, error) {
	if t, ok := s.tokens[accessorID]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("acl: token %q: %w", truncate(accessorID), ErrNotFound)
}

// TokenBySecret returns the token whose secret hashes to h, or ErrNotFound.
func (s *State) TokenBySecret(h SecretHash) (*Token, error) {
	if t, ok := s.bySecret[h]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("acl: token by secret: %w", ErrNotFound)
}

// Tokens returns every token, in the order they were created.
func (s *State) Tokens() []*Token {
	out := make([]*Token, 0, len(s.tokens))
	for _, t := range s.tokens {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *Token) int {
		if c := cmp.Compare(a.CreateIndex, b.CreateIndex); c != 0 {
			return c
		}
		return strings.Compare(a.AccessorID, b.AccessorID)
	})
	return out
}

// Policy returns the policy with id, or ErrNotFound.
func (s *State) Policy(id string) (*Policy, error) {
	if p, ok := s.policies[id]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("acl: policy %q: %w", truncate(id), ErrNotFound)
}

// PolicyByName returns the policy called name (case-insensitively), or
// ErrNotFound.
func (s *State) PolicyByName(name string) (*Policy, error) {
	if p, ok := s.byName[strings.ToLower(name)]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("acl: policy named %q: %w", truncate(name), ErrNotFound)
}

// Policies returns every policy, by name.
func (s *State) Policies() []*Policy {
	out := make([]*Policy, 0, len(s.policies))
	for _, p := range s.policies {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Policy) int { return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)) })
	return out
}

// advance checks that a write comes at an index after the state's.
func (s *State) advance(op string, index uint64) error {
	if index <= s.index {
		return fmt.Errorf("acl: %s: %w: index %d is not after the state's %d", op, ErrConflict, index, s.index)
	}
	return nil
}

func checkCAS(op, what string, cas, modify uint64, exists bool) error {
	switch {
	case cas == 0:
		return nil
	case !exists:
		return fmt.Errorf("acl: %s: %w: compare-and-set index %d, but %s does not exist", op, ErrConflict, cas, what)
	case cas != modify:
		return fmt.Errorf("acl: %s: %w: compare-and-set index %d, but %s was last changed at %d", op, ErrConflict, cas, what, modify)
	}
	return nil
}

// SetPolicy creates or replaces the policy with p.ID (a UUID the caller
// chose) at index. cas, when not 0, must be the stored policy's
// ModifyIndex. The builtin policy cannot change, and names are unique.
func (s *State) SetPolicy(p *Policy, cas, index uint64) (*Policy, error) {
	const op = "set policy"
	if err := s.advance(op, index); err != nil {
		return nil, err
	}
	if !validUUID(p.ID) {
		return nil, fmt.Errorf("acl: %s: %w: ID %q is not a UUID", op, ErrInvalidPolicy, truncate(p.ID))
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("acl: %s: %w", op, err)
	}
	old, exists := s.policies[p.ID]
	what := fmt.Sprintf("policy %q", p.Name)
	var modify uint64
	if exists {
		modify = old.ModifyIndex
	}
	if err := checkCAS(op, what, cas, modify, exists); err != nil {
		return nil, err
	}
	if p.ID == BuiltinCatalogReadPolicyID {
		return nil, fmt.Errorf("acl: %s: %w: %s is builtin and cannot change; make a policy of your own", op, ErrConflict, BuiltinCatalogReadPolicyName)
	}
	if other, taken := s.byName[strings.ToLower(p.Name)]; taken && other.ID != p.ID {
		return nil, fmt.Errorf("acl: %s: %w: the name %q is taken by policy %s", op, ErrConflict, p.Name, other.ID)
	}
	if !exists && len(s.policies) >= MaxPolicies {
		return nil, fmt.Errorf("acl: %s: %w: the state holds %d policies, the most it may; delete some first", op, ErrConflict, len(s.policies))
	}
	stored := clonePolicy(p)
	stored.CreateIndex, stored.ModifyIndex = index, index
	if exists {
		stored.CreateIndex = old.CreateIndex
		delete(s.byName, strings.ToLower(old.Name))
	}
	s.putPolicy(stored)
	s.index = index
	return stored, nil
}

// DeletePolicy deletes the policy with id at index. A policy that tokens
// still link is kept: the error names them, so that no token loses (or, with
// a deny rule, gains) rights by surprise.
func (s *State) DeletePolicy(id string, cas, index uint64) error {
	const op = "delete policy"
	if err := s.advance(op, index); err != nil {
		return err
	}
	p, exists := s.policies[id]
	if !exists {
		return fmt.Errorf("acl: %s %q: %w", op, truncate(id), ErrNotFound)
	}
	if err := checkCAS(op, fmt.Sprintf("policy %q", p.Name), cas, p.ModifyIndex, true); err != nil {
		return err
	}
	if id == BuiltinCatalogReadPolicyID {
		return fmt.Errorf("acl: %s: %w: %s is builtin; unlink it from the anonymous token instead", op, ErrConflict, BuiltinCatalogReadPolicyName)
	}
	var users []string
	for _, t := range s.Tokens() {
		for _, l := range t.Policies {
			if l.ID == id {
				users = append(users, t.AccessorID)
			}
		}
	}
	if len(users) > 0 {
		shown := strings.Join(users[:min(3, len(users))], ", ")
		if len(users) > 3 {
			shown += ", ..."
		}
		return fmt.Errorf("acl: %s: %w: policy %q is linked by %d tokens (%s); unlink it first", op, ErrConflict, p.Name, len(users), shown)
	}
	delete(s.policies, id)
	delete(s.byName, strings.ToLower(p.Name))
	s.index = index
	return nil
}

// SetToken creates or replaces the token with t.AccessorID at index. cas,
// when not 0, must be the stored token's ModifyIndex. Links given by name
// get their ID, and every link must name an existing policy. A token's
// secret and type never change; the anonymous token may change only its
// description and policies.
func (s *State) SetToken(t *Token, cas, index uint64) (*Token, error) {
	const op = "set token"
	if err := s.advance(op, index); err != nil {
		return nil, err
	}
	stored, err := s.prepareToken(op, t)
	if err != nil {
		return nil, err
	}
	old, exists := s.tokens[t.AccessorID]
	var modify uint64
	if exists {
		modify = old.ModifyIndex
	}
	if err := checkCAS(op, "token "+t.AccessorID, cas, modify, exists); err != nil {
		return nil, err
	}
	if exists {
		if old.SecretHash != stored.SecretHash {
			return nil, fmt.Errorf("acl: %s: %w: token %s: a secret cannot change; make a new token", op, ErrConflict, t.AccessorID)
		}
		if old.Type != stored.Type {
			return nil, fmt.Errorf("acl: %s: %w: token %s: the type cannot change (%s); make a new token", op, ErrConflict, t.AccessorID, old.Type)
		}
		stored.CreateIndex, stored.CreateTime = old.CreateIndex, old.CreateTime
	} else {
		if len(s.tokens) >= MaxTokens {
			return nil, fmt.Errorf("acl: %s: %w: the state holds %d tokens, the most it may; delete some first", op, ErrConflict, len(s.tokens))
		}
		if other, taken := s.bySecret[stored.SecretHash]; taken {
			return nil, fmt.Errorf("acl: %s: %w: token %s has the same secret", op, ErrConflict, other.AccessorID)
		}
		stored.CreateIndex = index
	}
	if t.AccessorID == AnonymousAccessorID && !stored.ExpirationTime.IsZero() {
		return nil, fmt.Errorf("acl: %s: %w: the anonymous token cannot expire", op, ErrInvalidPolicy)
	}
	stored.ModifyIndex = index
	s.putToken(stored)
	s.index = index
	return stored, nil
}

// prepareToken validates t and returns the copy to store, with its links
// resolved to IDs and current names.
func (s *State) prepareToken(op string, t *Token) (*Token, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("acl: %s: %w", op, err)
	}
	stored := cloneToken(t)
	seen := map[string]bool{}
	for i, l := range stored.Policies {
		var p *Policy
		if l.ID != "" {
			p = s.policies[l.ID]
		} else {
			p = s.byName[strings.ToLower(l.Name)]
		}
		if p == nil {
			what := l.ID
			if what == "" {
				what = fmt.Sprintf("named %q", truncate(l.Name))
			}
			return nil, fmt.Errorf("acl: %s: %w: token %s: policies[%d]: no policy %s", op, ErrInvalidPolicy, t.AccessorID, i, what)
		}
		if seen[p.ID] {
			return nil, fmt.Errorf("acl: %s: %w: token %s: policy %q is linked twice", op, ErrInvalidPolicy, t.AccessorID, p.Name)
		}
		seen[p.ID] = true
		stored.Policies[i] = PolicyLink{ID: p.ID, Name: p.Name}
	}
	return stored, nil
}

// DeleteToken deletes the token with accessorID at index. The anonymous
// token cannot be deleted: unlink its policies to take its rights away.
func (s *State) DeleteToken(accessorID string, cas, index uint64) error {
	const op = "delete token"
	if err := s.advance(op, index); err != nil {
		return err
	}
	t, exists := s.tokens[accessorID]
	if !exists {
		return fmt.Errorf("acl: %s %q: %w", op, truncate(accessorID), ErrNotFound)
	}
	if err := checkCAS(op, "token "+accessorID, cas, t.ModifyIndex, true); err != nil {
		return err
	}
	if accessorID == AnonymousAccessorID {
		return fmt.Errorf("acl: %s: %w: the anonymous token is builtin; unlink its policies to take its rights away", op, ErrConflict)
	}
	delete(s.tokens, accessorID)
	delete(s.bySecret, t.SecretHash)
	s.index = index
	return nil
}

// CheckBootstrap says whether a bootstrap may happen now: when none has, or
// when resetIndex is the index of the last one. The reset index must come
// from a place only a server's operator can write (a file in the server's
// data directory), never from the API request itself: the index is not a
// secret, it is printed in this very error.
func (s *State) CheckBootstrap(resetIndex uint64) error {
	if s.bootstrapIndex != 0 && resetIndex != s.bootstrapIndex {
		return fmt.Errorf("acl: bootstrap: %w (reset index: %d)", ErrBootstrapDone, s.bootstrapIndex)
	}
	return nil
}

// Bootstrap stores t, the first management token, at index, if
// CheckBootstrap(resetIndex) allows it, and records index as the bootstrap
// index: the same reset index cannot serve twice.
func (s *State) Bootstrap(t *Token, resetIndex, index uint64) (*Token, error) {
	const op = "bootstrap"
	if err := s.CheckBootstrap(resetIndex); err != nil {
		return nil, err
	}
	if t.Type != TypeManagement {
		return nil, fmt.Errorf("acl: %s: %w: the bootstrap token must be a management token, not %q", op, ErrInvalidPolicy, t.Type)
	}
	if _, exists := s.tokens[t.AccessorID]; exists {
		return nil, fmt.Errorf("acl: %s: %w: token %s exists", op, ErrConflict, t.AccessorID)
	}
	stored, err := s.SetToken(t, 0, index)
	if err != nil {
		return nil, err
	}
	s.bootstrapIndex = index
	return stored, nil
}

// Dump is the whole state, for a Raft snapshot.
type Dump struct {
	Index          uint64    `json:"index"`
	BootstrapIndex uint64    `json:"bootstrap_index"`
	Tokens         []*Token  `json:"tokens"`
	Policies       []*Policy `json:"policies"`
}

// Dump returns the state's content. The entries are the state's own.
func (s *State) Dump() Dump {
	return Dump{Index: s.index, BootstrapIndex: s.bootstrapIndex, Tokens: s.Tokens(), Policies: s.Policies()}
}

// LoadState rebuilds a state from a dump, checking everything a write
// would: a damaged or hand-edited snapshot is refused as a whole rather
// than half loaded. Builtins missing from the dump are put back.
func LoadState(d Dump) (*State, error) {
	const op = "load"
	s := NewState()
	if d.BootstrapIndex > d.Index {
		return nil, fmt.Errorf("acl: %s: %w: bootstrap index %d is after the state's index %d", op, ErrInvalidPolicy, d.BootstrapIndex, d.Index)
	}
	if len(d.Policies) > MaxPolicies || len(d.Tokens) > MaxTokens {
		return nil, fmt.Errorf("acl: %s: %w: %d policies and %d tokens, more than %d and %d", op, ErrInvalidPolicy, len(d.Policies), len(d.Tokens), MaxPolicies, MaxTokens)
	}
	for _, p := range d.Policies {
		if p == nil || p.ID == BuiltinCatalogReadPolicyID {
			continue
		}
		if !validUUID(p.ID) {
			return nil, fmt.Errorf("acl: %s: %w: policy ID %q is not a UUID", op, ErrInvalidPolicy, truncate(p.ID))
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("acl: %s: %w", op, err)
		}
		if _, dup := s.policies[p.ID]; dup {
			return nil, fmt.Errorf("acl: %s: %w: policy %s appears twice", op, ErrInvalidPolicy, p.ID)
		}
		if _, dup := s.byName[strings.ToLower(p.Name)]; dup {
			return nil, fmt.Errorf("acl: %s: %w: two policies are named %q", op, ErrInvalidPolicy, p.Name)
		}
		s.putPolicy(clonePolicy(p))
	}
	seen := map[string]bool{}
	for _, t := range d.Tokens {
		if t == nil {
			continue
		}
		stored, err := s.prepareToken(op, t)
		if err != nil {
			return nil, err
		}
		if seen[t.AccessorID] {
			return nil, fmt.Errorf("acl: %s: %w: token %s appears twice", op, ErrInvalidPolicy, t.AccessorID)
		}
		seen[t.AccessorID] = true
		if other, dup := s.bySecret[t.SecretHash]; dup && t.AccessorID != AnonymousAccessorID {
			return nil, fmt.Errorf("acl: %s: %w: tokens %s and %s have the same secret", op, ErrInvalidPolicy, other.AccessorID, t.AccessorID)
		}
		s.putToken(stored)
	}
	s.index, s.bootstrapIndex = d.Index, d.BootstrapIndex
	return s, nil
}

func (s *State) putPolicy(p *Policy) {
	s.policies[p.ID] = p
	s.byName[strings.ToLower(p.Name)] = p
}

func (s *State) putToken(t *Token) {
	s.tokens[t.AccessorID] = t
	if t.AccessorID != AnonymousAccessorID {
		s.bySecret[t.SecretHash] = t
	}
}

func clonePolicy(p *Policy) *Policy {
	c := *p
	r := &c.Rules
	for i := range sections {
		if sec := &sections[i]; sec.of != nil {
			m := sec.of(r)
			if *m != nil {
				cp := make(map[string]Access, len(*m))
				for k, v := range *m {
					cp[k] = v
				}
				*m = cp
			}
		}
	}
	return &c
}

func cloneToken(t *Token) *Token {
	c := *t
	c.Policies = slices.Clone(t.Policies)
	return &c
}
