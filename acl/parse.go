package acl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshwork/meshwork/internal/suggest"
)

// ParsePolicy reads one policy document, in YAML or JSON (JSON is YAML):
//
//	name: web-deploy
//	description: CI deploys the web service
//	rules:
//	  service:
//	    web: write
//	  service_prefix:
//	    "": read
//
// The document is decoded strictly, the way the project reads its policy
// documents and its config: unknown keys are refused with the closest known
// one, and so are duplicate keys, YAML anchors and aliases, wrong types and
// more than one document. Then every rule is validated. The error joins one
// *RuleError per problem, each naming the field, the value and the fix.
func ParsePolicy(data []byte) (*Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, &RuleError{Msg: fmt.Sprintf("the document is %d bytes, more than the limit of %d", len(data), MaxPolicyBytes)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := safeDecode(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &RuleError{Msg: "the document is empty (want name and rules)"}
		}
		return nil, &RuleError{Msg: "malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var extra yaml.Node
	if err := safeDecode(dec, &extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, &RuleError{Msg: "malformed YAML after the first document: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		return nil, &RuleError{Line: line, Msg: "a second document follows the first: give one policy per input"}
	}
	body := &doc
	if body.Kind == yaml.DocumentNode && len(body.Content) == 1 {
		body = body.Content[0]
	}
	d := &policyDecoder{lines: map[string]int{}}
	p := d.policy(body)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	if errs := validatePolicy(p, d.lines); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// safeDecode turns a panic inside the YAML library into an error: one bad
// input must never take the agent down.
func safeDecode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

// policyDecoder walks the YAML tree of one policy beside the shape it must
// have. The shape is fixed and small, so it is walked by hand rather than by
// reflection; every problem is collected with its path and line.
type policyDecoder struct {
	name  string
	lines map[string]int
	errs  []error
}

func (d *policyDecoder) add(path string, n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &RuleError{Policy: d.name, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// usable refuses anchors and aliases, which could make a small input expand
// into a huge one, and which no policy needs.
func (d *policyDecoder) usable(path string, n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		d.add(path, n, "YAML anchors and aliases are not supported")
		return false
	}
	return true
}

var topKeys = []string{"name", "description", "rules"}

func (d *policyDecoder) policy(n *yaml.Node) *Policy {
	p := &Policy{}
	if !d.usable("", n) {
		return p
	}
	if n.Kind != yaml.MappingNode {
		d.add("", n, "a policy must be a mapping with name and rules, got %s", nodeKind(n))
		return p
	}
	// The name first, so that every later error can carry it.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Value == "name" && v.Kind == yaml.ScalarNode && v.Tag == "!!str" {
			d.name = v.Value
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key, ok := d.keyOf("", kn)
		if !ok {
			continue
		}
		if seen[key] {
			d.add(key, kn, "appears twice")
			continue
		}
		seen[key] = true
		d.lines[key] = kn.Line
		if !d.usable(key, vn) {
			continue
		}
		switch key {
		case "name":
			p.Name, _ = d.str(key, vn)
		case "description":
			p.Description, _ = d.str(key, vn)
		case "rules":
			d.rules(vn, &p.Rules)
		default:
			d.add(key, kn, "unknown field%s (want %s)", suggest.Hint(key, topKeys), strings.Join(topKeys, ", "))
		}
	}
	for _, k := range []string{"name", "rules"} {
		if !seen[k] {
			d.add(k, n, "required")
		}
	}
	return p
}

func (d *policyDecoder) rules(n *yaml.Node, r *Rules) {
	const path = "rules"
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // `rules:` with nothing under it grants nothing
	}
	if n.Kind != yaml.MappingNode {
		d.add(path, n, "must be a mapping of sections (%s), got %s", strings.Join(sectionKeys(), ", "), nodeKind(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key, ok := d.keyOf(path, kn)
		if !ok {
			continue
		}
		sp := path + "." + key
		s := sectionByKey(key)
		switch {
		case s == nil:
			d.add(sp, kn, "unknown section%s (want one of %s)", suggest.Hint(key, sectionKeys()), strings.Join(sectionKeys(), ", "))
			continue
		case seen[key]:
			d.add(sp, kn, "appears twice")
			continue
		}
		seen[key] = true
		d.lines[sp] = kn.Line
		if !d.usable(sp, vn) {
			continue
		}
		if s.level != nil {
			if a, ok := d.access(sp, vn); ok {
				*s.level(r) = a
			}
			continue
		}
		d.section(sp, s, vn, s.of(r))
	}
}

func (d *policyDecoder) section(path string, s *section, n *yaml.Node, out *map[string]Access) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		example := "{web: read}"
		switch s.resource {
		case ResourceOperator:
			example = "{raft: read}"
		case ResourceCA:
			example = "{token: write}"
		case ResourcePolicy:
			example = "{Split: write}"
		}
		if s.prefix {
			example = `{"": read}`
		}
		d.add(path, n, "must be a mapping of names to read, write or deny, such as %s; got %s", example, nodeKind(n))
		return
	}
	if len(n.Content)/2 > MaxRules {
		d.add(path, n, "has %d rules, more than %d", len(n.Content)/2, MaxRules)
		return
	}
	m := make(map[string]Access, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if !d.usable(path, kn) {
			continue
		}
		if kn.Kind != yaml.ScalarNode || kn.Tag == "!!null" {
			d.add(path, kn, "keys must be names, got %s", nodeKind(kn))
			continue
		}
		kp := keyPath(s.key, kn.Value)
		if _, dup := m[kn.Value]; dup {
			d.add(kp, kn, "appears twice")
			continue
		}
		d.lines[kp] = kn.Line
		if !d.usable(kp, vn) {
			continue
		}
		if vn.Kind == yaml.MappingNode {
			// The Consul habit: `web: {policy: write}`.
			d.add(kp, vn, "must be read, write or deny, got a mapping: write %s: write, not %s: {policy: write}", yamlKey(kn.Value), yamlKey(kn.Value))
			continue
		}
		if a, ok := d.access(kp, vn); ok {
			m[kn.Value] = a
		}
	}
	if len(m) > 0 {
		*out = m // an empty section is the same as none
	}
}

// access reads a level.
func (d *policyDecoder) access(path string, n *yaml.Node) (Access, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.add(path, n, "must be read, write or deny, got %s", nodeKind(n))
		return 0, false
	}
	a, ok := parseAccess(n.Value)
	if !ok {
		hint := ""
		if c := suggest.Closest(n.Value, accessNames); c != "" {
			hint = fmt.Sprintf("; did you mean %q?", c)
		}
		d.add(path, n, "%q is not an access level (want read, write or deny%s)", truncate(n.Value), hint)
		return 0, false
	}
	return a, true
}

// keyOf returns a mapping key, which must be a string.
func (d *policyDecoder) keyOf(path string, kn *yaml.Node) (string, bool) {
	if kn.Kind != yaml.ScalarNode || kn.Tag != "!!str" {
		d.add(path, kn, "keys must be strings, got %s", nodeKind(kn))
		return "", false
	}
	return kn.Value, true
}

func (d *policyDecoder) str(path string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.add(path, n, "must be a string, got %s", nodeKind(n))
		return "", false
	}
	return n.Value, true
}

// yamlKey quotes a key the way it must be written in YAML when it needs it.
func yamlKey(k string) string {
	if k == "" || strings.ContainsAny(k, ":#{}[],&*!|>'\"%@` ") {
		return fmt.Sprintf("%q", truncate(k))
	}
	return truncate(k)
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("string %q", truncate(n.Value))
		case "!!null":
			return "null"
		default:
			return fmt.Sprintf("%s %s", strings.TrimPrefix(n.Tag, "!!"), truncate(n.Value))
		}
	}
	return "nothing"
}

// MarshalYAML gives the policy's file form: name, description and rules, as
// ParsePolicy reads it. The ID and indexes are left out: they belong to the
// store, not to the file an operator edits.
func (p *Policy) MarshalYAML() (any, error) {
	return struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description,omitempty"`
		Rules       Rules  `yaml:"rules"`
	}{p.Name, p.Description, p.Rules}, nil
}
