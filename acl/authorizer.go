package acl

import (
	"fmt"
	"sort"
	"strings"

	"github.com/meshwork/meshwork/policy"
)

// DefaultPolicy decides a request that no rule of the token covers.
type DefaultPolicy string

// The default policies.
const (
	// DefaultDeny refuses what no rule grants: the production setting.
	DefaultDeny DefaultPolicy = "deny"
	// DefaultAllow allows what no rule denies: a way to turn ACLs on in an
	// existing mesh, token by token, before switching to deny.
	DefaultAllow DefaultPolicy = "allow"
)

// Authorizer decides the requests of one token. It is compiled once from
// the token's policies and is immutable, so that it can be cached and used
// by any number of goroutines; a decision takes a map lookup or a few, and
// allocates nothing unless Check denies.
type Authorizer struct {
	accessorID   string
	allowAll     bool
	defaultAllow bool
	sets         [numResources]ruleSet
}

// allowAll is the authorizer of every request when ACLs are disabled.
var allowAll = &Authorizer{allowAll: true}

// ruleSet is the compiled rules of one resource.
type ruleSet struct {
	exact  map[string]rule
	prefix map[string]rule
	// prefixLens are the distinct lengths of the prefixes, longest first:
	// a lookup tries name[:l] for each, so that the longest prefix wins in
	// as many map lookups as there are distinct lengths.
	prefixLens []int
}

// rule is one compiled rule and where it came from, for the reason of a
// denial (formatted only then: compiling stays cheap).
type rule struct {
	access  Access
	section string
	key     string
	policy  string
}

// String reads `rule service_prefix "": read of policy "ops"`.
func (r rule) String() string {
	if r.section == "acl" || r.section == "agent" {
		return fmt.Sprintf("rule %s: %s of policy %q", r.section, r.access, r.policy)
	}
	return fmt.Sprintf("rule %s %q: %s of policy %q", r.section, r.key, r.access, r.policy)
}

// AccessorID is the public ID of the token this authorizer decides for;
// empty when ACLs are disabled.
func (a *Authorizer) AccessorID() string { return a.accessorID }

// Check returns nil when the token may have want on resource r's name, and
// a *PermissionError otherwise. name is the service, destination, node,
// document kind or action; it is ignored for ResourceACL and ResourceAgent.
func (a *Authorizer) Check(r Resource, name string, want Access) error {
	d := a.decide(r, name, want)
	if d == allowed {
		return nil
	}
	if !r.named() {
		name = ""
	}
	e := &PermissionError{Permission: Permission{Resource: r, Name: name, Access: want}, AccessorID: a.accessorID}
	switch d {
	case deniedByRule:
		var buf [2 * MaxNameLen]byte
		ru, _ := a.sets[r].lookup(lowerName(name, &buf))
		e.Reason = ru.String()
	case deniedByDefault:
		e.Reason = "no rule matches and the default policy is deny"
	default:
		e.Reason = "not a valid permission"
	}
	return e
}

// Allowed is Check without the error, for filtering lists: it allocates
// nothing (for names up to 256 bytes).
func (a *Authorizer) Allowed(r Resource, name string, want Access) bool {
	return a.decide(r, name, want) == allowed
}

// CheckDocument checks a policy document of kind named name: an Intention by
// its destination (its name), any other kind by its kind.
func (a *Authorizer) CheckDocument(kind policy.Kind, name string, want Access) error {
	if kind == policy.KindIntention {
		return a.Check(ResourceIntention, name, want)
	}
	return a.Check(ResourcePolicy, string(kind), want)
}

// AllowedDocument is CheckDocument without the error.
func (a *Authorizer) AllowedDocument(kind policy.Kind, name string, want Access) bool {
	if kind == policy.KindIntention {
		return a.Allowed(ResourceIntention, name, want)
	}
	return a.Allowed(ResourcePolicy, string(kind), want)
}

// decision is the outcome of decide.
type decision uint8

const (
	allowed decision = iota
	deniedByRule
	deniedByDefault
	invalidPermission
)

func (a *Authorizer) decide(r Resource, name string, want Access) decision {
	if a.allowAll {
		return allowed
	}
	if r == 0 || int(r) >= numResources || (want != Read && want != Write) {
		return invalidPermission
	}
	if !r.named() {
		name = ""
	}
	var buf [2 * MaxNameLen]byte
	ru, found := a.sets[r].lookup(lowerName(name, &buf))
	switch {
	case found && ru.access.grants(want):
		return allowed
	case found:
		return deniedByRule
	case a.defaultAllow:
		return allowed
	}
	return deniedByDefault
}

// lowerName lowers name in ASCII, as rule keys are written, into buf when
// it fits: with maps looked up by string(bytes), a decision then allocates
// nothing.
func lowerName(name string, buf *[2 * MaxNameLen]byte) []byte {
	var lower []byte
	if len(name) <= len(buf) {
		lower = buf[:len(name)]
	} else {
		lower = make([]byte, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return lower
}

// lookup finds the rule for name: an exact rule, else the longest prefix.
func (s *ruleSet) lookup(name []byte) (rule, bool) {
	if r, ok := s.exact[string(name)]; ok {
		return r, true
	}
	for _, l := range s.prefixLens {
		if l <= len(name) {
			if r, ok := s.prefix[string(name[:l])]; ok {
				return r, true
			}
		}
	}
	return rule{}, false
}

// compile builds the authorizer of a client token from its policies. Rules
// for the same name in several policies merge: deny beats write beats read.
func compile(accessorID string, policies []*Policy, def DefaultPolicy) *Authorizer {
	a := &Authorizer{accessorID: accessorID, defaultAllow: def == DefaultAllow}
	for _, p := range policies {
		for i := range sections {
			s := &sections[i]
			set := &a.sets[s.resource]
			if s.level != nil {
				if lvl := *s.level(&p.Rules); lvl != 0 {
					set.add(false, "", rule{access: lvl, section: s.key, policy: p.Name})
				}
				continue
			}
			m := *s.of(&p.Rules)
			for _, key := range sortedKeys(m) {
				lvl := m[key]
				prefix := s.prefix
				norm := strings.ToLower(key)
				if s.resource == ResourcePolicy && key == "*" {
					prefix, norm = true, "" // every kind
				}
				set.add(prefix, norm, rule{access: lvl, section: s.key, key: key, policy: p.Name})
			}
		}
	}
	for i := range a.sets {
		set := &a.sets[i]
		for k := range set.prefix {
			if !containsInt(set.prefixLens, len(k)) {
				set.prefixLens = append(set.prefixLens, len(k))
			}
		}
		sort.Sort(sort.Reverse(sort.IntSlice(set.prefixLens)))
	}
	return a
}

func (s *ruleSet) add(prefix bool, key string, r rule) {
	m := &s.exact
	if prefix {
		m = &s.prefix
	}
	if *m == nil {
		*m = map[string]rule{}
	}
	if old, ok := (*m)[key]; ok && old.access >= r.access {
		return // the stronger rule stays: deny, then write, then read
	}
	(*m)[key] = r
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
