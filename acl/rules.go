package acl

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/meshwork/meshwork/internal/strictyaml"
	"github.com/meshwork/meshwork/internal/suggest"
	"github.com/meshwork/meshwork/policy"
)

// Limits on a policy, so that a hostile or mistaken one cannot exhaust
// memory or slow every request down.
const (
	// MaxPolicyBytes is the largest policy document ParsePolicy reads.
	MaxPolicyBytes = 64 << 10
	// MaxRules is the most keys all sections of one policy may hold.
	MaxRules = 1000
	// MaxNameLen is the longest policy name, and the longest name a rule
	// may key (node names, the longest of the mesh, go to 128).
	MaxNameLen = 128
	// MaxDescriptionLen is the longest description of a policy or token.
	MaxDescriptionLen = 512
)

// Policy is a named set of rules. Tokens link policies by ID; names are
// unique (case-insensitively) and are what operators write.
type Policy struct {
	// ID is a UUID assigned when the policy is created.
	ID string `json:"id"`
	// Name is 1 to 128 letters, digits, '-' and '_'.
	Name string `json:"name"`
	// Description is free text for operators, at most 512 bytes.
	Description string `json:"description,omitempty"`
	// Rules are what the policy grants and denies.
	Rules Rules `json:"rules"`
	// CreateIndex and ModifyIndex are the store indexes that created and
	// last changed the policy; ModifyIndex is what a compare-and-set names.
	CreateIndex uint64 `json:"create_index,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
}

// Rules are the sections of a policy. Each map goes from a name (or a
// prefix, or an action) to a level; the package comment describes every
// section. Names are matched case-insensitively, as the catalog matches
// service names.
type Rules struct {
	Service         map[string]Access `json:"service,omitempty" yaml:"service,omitempty"`
	ServicePrefix   map[string]Access `json:"service_prefix,omitempty" yaml:"service_prefix,omitempty"`
	Intention       map[string]Access `json:"intention,omitempty" yaml:"intention,omitempty"`
	IntentionPrefix map[string]Access `json:"intention_prefix,omitempty" yaml:"intention_prefix,omitempty"`
	Node            map[string]Access `json:"node,omitempty" yaml:"node,omitempty"`
	NodePrefix      map[string]Access `json:"node_prefix,omitempty" yaml:"node_prefix,omitempty"`
	// Policy maps a document kind (not Intention) or "*" (every such kind)
	// to a level.
	Policy map[string]Access `json:"policy,omitempty" yaml:"policy,omitempty"`
	// Operator maps raft, snapshot and keyring to a level.
	Operator map[string]Access `json:"operator,omitempty" yaml:"operator,omitempty"`
	// CA maps roots and leaf (read) and token and rotate (write) to a level.
	CA map[string]Access `json:"ca,omitempty" yaml:"ca,omitempty"`
	// ACL is the level on tokens and policies; 0 when the policy says
	// nothing about them.
	ACL Access `json:"acl,omitempty" yaml:"acl,omitempty"`
	// Agent is the level on the local agent's own endpoints; 0 when the
	// policy says nothing about them.
	Agent Access `json:"agent,omitempty" yaml:"agent,omitempty"`
}

// section describes one key of `rules:`.
type section struct {
	key      string
	resource Resource
	// prefix is true for the *_prefix sections, whose keys match the start
	// of a name.
	prefix bool
	// of returns the section's map, or nil for a single-level section.
	of func(*Rules) *map[string]Access
	// level returns the single level of the acl and agent sections.
	level func(*Rules) *Access
}

var sections = []section{
	{key: "service", resource: ResourceService, of: func(r *Rules) *map[string]Access { return &r.Service }},
	{key: "service_prefix", resource: ResourceService, prefix: true, of: func(r *Rules) *map[string]Access { return &r.ServicePrefix }},
	{key: "intention", resource: ResourceIntention, of: func(r *Rules) *map[string]Access { return &r.Intention }},
	{key: "intention_prefix", resource: ResourceIntention, prefix: true, of: func(r *Rules) *map[string]Access { return &r.IntentionPrefix }},
	{key: "node", resource: ResourceNode, of: func(r *Rules) *map[string]Access { return &r.Node }},
	{key: "node_prefix", resource: ResourceNode, prefix: true, of: func(r *Rules) *map[string]Access { return &r.NodePrefix }},
	{key: "policy", resource: ResourcePolicy, of: func(r *Rules) *map[string]Access { return &r.Policy }},
	{key: "operator", resource: ResourceOperator, of: func(r *Rules) *map[string]Access { return &r.Operator }},
	{key: "ca", resource: ResourceCA, of: func(r *Rules) *map[string]Access { return &r.CA }},
	{key: "acl", resource: ResourceACL, level: func(r *Rules) *Access { return &r.ACL }},
	{key: "agent", resource: ResourceAgent, level: func(r *Rules) *Access { return &r.Agent }},
}

func sectionKeys() []string {
	out := make([]string, len(sections))
	for i, s := range sections {
		out[i] = s.key
	}
	return out
}

func sectionByKey(key string) *section {
	for i := range sections {
		if sections[i].key == key {
			return &sections[i]
		}
	}
	return nil
}

// RuleError names what is wrong in a policy and where. Its text reads
// `policy "deploy": rules.service.web: "wirte" is not an access level (want
// read, write or deny; did you mean "write"?) (line 5)`.
type RuleError struct {
	// Policy is the policy's name, when it got that far.
	Policy string
	// Line is the line in the input; 0 when unknown (a policy built in
	// code or decoded from JSON by the API).
	Line int
	// Path is the field, such as "rules.service.web"; empty for the whole
	// document.
	Path string
	// Msg says what is wrong and how to fix it.
	Msg string
}

func (e *RuleError) Error() string {
	var b strings.Builder
	b.WriteString("policy")
	if e.Policy != "" {
		fmt.Fprintf(&b, " %q", truncate(e.Policy))
	}
	if e.Path != "" {
		b.WriteString(": ")
		b.WriteString(e.Path)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalidPolicy) true for every RuleError.
func (e *RuleError) Is(target error) bool { return target == ErrInvalidPolicy }

// keyPath is the path of one rule key, as the strict walker writes it: a
// key that would read ambiguously (empty, or holding a dot) is quoted.
func keyPath(section, key string) string {
	return strictyaml.Join("rules."+section, key)
}

// Validate checks a policy built in code or decoded from the API, as
// ParsePolicy does for a parsed one. The ID and indexes are the store's and
// are not checked here. Its error joins one *RuleError per problem.
func (p *Policy) Validate() error {
	return errors.Join(validatePolicy(p, nil)...)
}

// validatePolicy checks p; lines gives the line of each path, when known.
func validatePolicy(p *Policy, lines map[string]int) []error {
	v := &ruleValidator{policy: p.Name, lines: lines}
	if err := validatePolicyName(p.Name); err != "" {
		v.add("name", "%s", err)
	}
	if len(p.Description) > MaxDescriptionLen {
		v.add("description", "is %d bytes, more than %d", len(p.Description), MaxDescriptionLen)
	}
	v.rules(&p.Rules)
	return v.errs
}

// validatePolicyName returns what is wrong with a policy name, or "".
func validatePolicyName(name string) string {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Sprintf("%q: want 1 to %d letters, digits, '-' or '_'", truncate(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(isAlnum(c) || c == '-' || c == '_') {
			return fmt.Sprintf("%q: character %q not allowed (letters, digits, '-', '_')", truncate(name), c)
		}
	}
	return ""
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

type ruleValidator struct {
	policy string
	lines  map[string]int
	errs   []error
}

func (v *ruleValidator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &RuleError{Policy: v.policy, Line: v.lines[path], Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *ruleValidator) rules(r *Rules) {
	total := 0
	for i := range sections {
		s := &sections[i]
		if s.level != nil {
			if a := *s.level(r); a != 0 && (a < Read || a > Deny) {
				v.add("rules."+s.key, "level %d is not read, write or deny", a)
			}
			continue
		}
		m := *s.of(r)
		total += len(m)
		seen := make(map[string]string, len(m))
		for _, key := range sortedKeys(m) {
			path := keyPath(s.key, key)
			a := m[key]
			if a == 0 {
				v.add(path, "has no level (want read, write or deny)")
				continue
			}
			if a < Read || a > Deny {
				v.add(path, "level %d is not read, write or deny", a)
				continue
			}
			norm, msg := v.key(s, key, a)
			if msg != "" {
				v.add(path, "%s", msg)
				continue
			}
			if other, dup := seen[norm]; dup {
				v.add(path, "names the same %s as %q (names are matched case-insensitively); keep one", s.resource, other)
				continue
			}
			seen[norm] = key
		}
	}
	if total > MaxRules {
		v.add("rules", "has %d rules, more than %d", total, MaxRules)
	}
}

// key checks one key of section s holding level a. It returns the key as
// the authorizer matches it, or what is wrong with it.
func (v *ruleValidator) key(s *section, key string, a Access) (string, string) {
	switch s.resource {
	case ResourcePolicy:
		if key == "*" {
			return key, ""
		}
		kind, err := policy.ParseKind(key)
		if err != nil {
			return "", fmt.Sprintf("%q is not a kind of policy document (want one of %s, or \"*\" for all of them)%s", truncate(key), policyKindList(), suggest.Hint(key, policyKindNames()))
		}
		if kind == policy.KindIntention {
			return "", "Intention documents are governed by the intention sections, by destination: write intention_prefix: {\"\": " + a.String() + "} for all of them"
		}
		return strings.ToLower(string(kind)), ""
	case ResourceOperator, ResourceCA:
		levels, ok := actionLevels[s.resource][key]
		if !ok {
			names := make([]string, 0, len(actionLevels[s.resource]))
			for n := range actionLevels[s.resource] {
				names = append(names, n)
			}
			sort.Strings(names)
			return "", fmt.Sprintf("%q is not a%s action (want one of %s)%s", truncate(key), article(s.key), strings.Join(names, ", "), suggest.Hint(key, names))
		}
		if a != Deny && !containsAccess(levels, a) {
			return "", meaninglessLevel(s.key, key, a, levels)
		}
		return key, ""
	}
	// Services, intentions and nodes.
	if strings.ContainsRune(key, '*') {
		switch {
		case key == "*" && s.resource == ResourceIntention && !s.prefix:
			return key, "" // the wildcard Intention document
		case key == "*":
			return "", fmt.Sprintf("\"*\" is not a wildcard here: write %s_prefix: {\"\": %s} to cover every %s", s.resource, a, s.resource)
		default:
			return "", fmt.Sprintf("%q: globs are not supported; write %s_prefix: {%q: %s}", truncate(key), s.resource, key[:strings.IndexByte(key, '*')], a)
		}
	}
	if key == "" && !s.prefix {
		return "", fmt.Sprintf("an empty name matches nothing; write %s_prefix: {\"\": %s} to cover every %s", s.resource, a, s.resource)
	}
	if len(key) > MaxNameLen {
		return "", fmt.Sprintf("is %d characters, more than %d", len(key), MaxNameLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !(isAlnum(c) || c == '.' || c == '-' || c == '_') {
			return "", fmt.Sprintf("%q: character %q not allowed in a name (letters, digits, '.', '-', '_')", truncate(key), c)
		}
	}
	return strings.ToLower(key), ""
}

func article(section string) string {
	if section == "operator" {
		return "n operator"
	}
	return " CA"
}

// meaninglessLevel explains a level that grants nothing on an action: a
// read-only action given write, or a write-only action given read.
func meaninglessLevel(section, key string, a Access, levels []Access) string {
	if levels[0] == Read {
		hint := ""
		if section == "ca" {
			hint = " (rotating the roots is ca: {rotate: write})"
		}
		return fmt.Sprintf("%q grants nothing more than \"read\": %s.%s is only read%s", a, section, key, hint)
	}
	return fmt.Sprintf("%q grants nothing: %s.%s is an action and needs \"write\" (or \"deny\")", a, section, key)
}

func containsAccess(levels []Access, a Access) bool {
	for _, l := range levels {
		if l == a {
			return true
		}
	}
	return false
}

func policyKindNames() []string {
	var out []string
	for _, k := range policy.Kinds {
		if k != policy.KindIntention {
			out = append(out, string(k))
		}
	}
	return out
}

func policyKindList() string { return strings.Join(policyKindNames(), ", ") }

func sortedKeys(m map[string]Access) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
