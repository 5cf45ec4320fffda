package acl

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshwork/meshwork/internal/strictyaml"
	"github.com/meshwork/meshwork/internal/suggest"
)

// policyFile is the file form of a policy: what ParsePolicy reads and
// MarshalYAML writes. The ID and indexes belong to the store, not to the
// file an operator edits.
type policyFile struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description,omitempty"`
	Rules       Rules  `yaml:"rules"`
}

// policyDecoder is the project's strict walker set up for policies: the
// nesting of a policy is fixed and shallow, every section holds at most
// MaxRules keys, and a level is decoded by decodeAccess.
var policyDecoder = strictyaml.Decoder{
	MaxDepth: 8,
	MaxItems: MaxRules,
	Types: map[reflect.Type]func(*yaml.Node, reflect.Value) string{
		reflect.TypeFor[Access](): decodeAccess,
	},
}

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
// The document is decoded by internal/strictyaml, the walker that reads the
// agent's config and the policy documents: unknown keys are refused with
// the closest known one, and so are duplicate keys, YAML anchors and
// aliases, wrong types and more than one document. Then every rule is
// validated. The error joins one *RuleError per problem, each naming the
// field, the value and the fix.
func ParsePolicy(data []byte) (*Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, &RuleError{Msg: fmt.Sprintf("the document is %d bytes, more than the limit of %d", len(data), MaxPolicyBytes)}
	}
	doc, err := strictyaml.ReadOne(data)
	if err != nil {
		var se *strictyaml.Error
		if errors.As(err, &se) {
			return nil, &RuleError{Line: se.Line, Msg: se.Msg}
		}
		return nil, &RuleError{Msg: "malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc == nil || len(doc.Content) == 0 {
		return nil, &RuleError{Msg: "the document is empty (want name and rules)"}
	}
	body := doc.Content[0]
	if body.Kind != yaml.MappingNode {
		return nil, &RuleError{Line: body.Line, Msg: "a policy must be a mapping with name and rules, got " + strictyaml.Describe(body)}
	}

	lines := map[string]int{}
	dec := policyDecoder
	dec.OnKey = func(path string, line int) { lines[path] = line }
	var f policyFile
	found := dec.Decode(body, &f)
	var errs []error
	for _, e := range found {
		errs = append(errs, &RuleError{Policy: f.Name, Line: e.Line, Path: e.Path, Msg: e.Msg + sectionHint(e)})
	}
	for _, k := range []string{"name", "rules"} {
		if _, ok := lines[k]; !ok {
			errs = append(errs, &RuleError{Policy: f.Name, Line: body.Line, Path: k, Msg: "required"})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p := &Policy{Name: f.Name, Description: f.Description, Rules: f.Rules}
	for i := range sections {
		// An empty section is the same as none.
		if s := &sections[i]; s.of != nil && len(*s.of(&p.Rules)) == 0 {
			*s.of(&p.Rules) = nil
		}
	}
	if errs := validatePolicy(p, lines); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// decodeAccess is the strict decoder's rule for a level: a string, one of
// read, write or deny.
func decodeAccess(n *yaml.Node, v reflect.Value) string {
	if n.Kind == yaml.MappingNode {
		// The Consul habit: `web: {policy: write}`.
		level := "write"
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k, l := n.Content[i], n.Content[i+1]; k.Value == "policy" && l.Kind == yaml.ScalarNode {
				level = truncate(l.Value)
			}
		}
		return fmt.Sprintf("must be read, write or deny, got a mapping: write the level itself (%s), not {policy: %s}", level, level)
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "must be read, write or deny, got " + strictyaml.Describe(n)
	}
	a, ok := parseAccess(n.Value)
	if !ok {
		hint := ""
		if c := suggest.Closest(n.Value, accessNames); c != "" {
			hint = fmt.Sprintf("; did you mean %q?", c)
		}
		return fmt.Sprintf("%q is not an access level (want read, write or deny%s)", truncate(n.Value), hint)
	}
	v.SetUint(uint64(a))
	return ""
}

// sectionHint adds to the walker's "want a mapping" what the mapping of
// rules or of one of its sections holds, with an example.
func sectionHint(e *strictyaml.Error) string {
	if !strings.HasPrefix(e.Msg, "want a mapping") {
		return ""
	}
	if e.Path == "rules" {
		return " of sections (" + strings.Join(sectionKeys(), ", ") + ")"
	}
	s := sectionByKey(strings.TrimPrefix(e.Path, "rules."))
	if s == nil || s.of == nil {
		return ""
	}
	example := "{web: read}"
	switch {
	case s.prefix:
		example = `{"": read}`
	case s.resource == ResourceOperator:
		example = "{raft: read}"
	case s.resource == ResourceCA:
		example = "{token: write}"
	case s.resource == ResourcePolicy:
		example = "{Split: write}"
	}
	return "; a section maps names to read, write or deny, such as " + example
}

// MarshalYAML gives the policy's file form: name, description and rules, as
// ParsePolicy reads it.
func (p *Policy) MarshalYAML() (any, error) {
	return policyFile{p.Name, p.Description, p.Rules}, nil
}
