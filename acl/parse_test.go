package acl

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParsePolicyExamples(t *testing.T) {
	files, err := filepath.Glob("testdata/*.*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParsePolicy(b)
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if p.Name == "" || reflect.DeepEqual(p.Rules, Rules{}) {
				t.Fatalf("parsed %+v", p)
			}
			roundTrip(t, p)
		})
	}
}

// roundTrip checks that the YAML file form and the JSON API form of p both
// parse back to the same rules.
func roundTrip(t *testing.T, p *Policy) {
	t.Helper()
	y, err := yaml.Marshal(p)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	back, err := ParsePolicy(y)
	if err != nil {
		t.Fatalf("the YAML form does not parse: %v\n%s", err, y)
	}
	if !reflect.DeepEqual(back, p) {
		t.Fatalf("YAML round trip changed the policy:\n%+v\n%+v\n%s", p, back, y)
	}
	j, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	var fromJSON Policy
	if err := json.Unmarshal(j, &fromJSON); err != nil {
		t.Fatalf("json.Unmarshal: %v\n%s", err, j)
	}
	if err := fromJSON.Validate(); err != nil || !reflect.DeepEqual(&fromJSON, p) {
		t.Fatalf("JSON round trip: %v\n%+v\n%+v", err, p, &fromJSON)
	}
}

func TestParsePolicyContent(t *testing.T) {
	p, err := ParsePolicy([]byte(`
name: ops
rules:
  service: {Web: write}
  service_prefix: {"": read, "db-": deny}
  policy: {split: write, "*": read}
  ca: {token: write}
  acl: read
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Rules{
		Service:       map[string]Access{"Web": Write},
		ServicePrefix: map[string]Access{"": Read, "db-": Deny},
		Policy:        map[string]Access{"split": Write, "*": Read},
		CA:            map[string]Access{"token": Write},
		ACL:           Read,
	}
	if !reflect.DeepEqual(p.Rules, want) || p.Name != "ops" {
		t.Fatalf("got %+v", p)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // each must appear in the error
	}{
		{"empty", "", []string{"the document is empty"}},
		{"not a mapping", "- a\n", []string{"a policy must be a mapping with name and rules, got a list"}},
		{"no name", "rules: {}\n", []string{"policy: name: required"}},
		{"no rules", "name: x\n", []string{`policy "x": rules: required`}},
		{"misspelt top key", "name: x\nrule: {}\n", []string{`rule: unknown key (did you mean "rules"?) (line 2)`}},
		{"bad name", "name: a b\nrules: {}\n", []string{`name: "a b": character ' ' not allowed`}},
		{"misspelt section", "name: x\nrules:\n  servce: {web: read}\n", []string{`rules.servce: unknown key (did you mean "service"?) (line 3)`}},
		{"misspelt level", "name: x\nrules:\n  service:\n    web: wirte\n", []string{`rules.service.web: "wirte" is not an access level (want read, write or deny; did you mean "write"?) (line 4)`}},
		{"level in capitals", "name: x\nrules:\n  acl: Write\n", []string{`did you mean "write"?`}},
		{"consul habit", "name: x\nrules:\n  service:\n    web: {policy: write}\n", []string{"rules.service.web: must be read, write or deny, got a mapping: write the level itself (write), not {policy: write} (line 4)"}},
		{"list level", "name: x\nrules:\n  agent: [read]\n", []string{"rules.agent: must be read, write or deny, got a list"}},
		{"scalar section", "name: x\nrules:\n  operator: write\n", []string{`rules.operator: want a mapping, got string "write"; a section maps names to read, write or deny, such as {raft: read} (line 3)`}},
		{"glob", "name: x\nrules:\n  service:\n    web-*: read\n", []string{`"web-*": globs are not supported; write service_prefix: {"web-": read}`}},
		{"star service", "name: x\nrules:\n  service:\n    '*': read\n", []string{`"*" is not a wildcard here: write service_prefix: {"": read}`}},
		{"empty exact name", "name: x\nrules:\n  node:\n    '': read\n", []string{`rules.node."": an empty name matches nothing; write node_prefix: {"": read}`}},
		{"bad character", "name: x\nrules:\n  node:\n    n/1: read\n", []string{`"n/1": character '/' not allowed in a name`}},
		{"case duplicate", "name: x\nrules:\n  service:\n    web: read\n    WEB: write\n", []string{`names the same service as "WEB"`}},
		{"duplicate key", "name: x\nrules:\n  service:\n    web: read\n    web: write\n", []string{"rules.service.web: appears twice (line 5)"}},
		{"duplicate section", "name: x\nrules:\n  acl: read\n  acl: write\n", []string{"rules.acl: appears twice (line 4)"}},
		{"unknown kind", "name: x\nrules:\n  policy:\n    Splitt: write\n", []string{`"Splitt" is not a kind of policy document`, `did you mean "Split"?`}},
		{"intention kind", "name: x\nrules:\n  policy:\n    Intention: write\n", []string{`Intention documents are governed by the intention sections, by destination: write intention_prefix: {"": write}`}},
		{"unknown operator action", "name: x\nrules:\n  operator:\n    raf: read\n", []string{`"raf" is not an operator action (want one of keyring, raft, snapshot) (did you mean "raft"?)`}},
		{"read of a write-only action", "name: x\nrules:\n  ca:\n    token: read\n", []string{`"read" grants nothing: ca.token is an action and needs "write" (or "deny")`}},
		{"write of a read-only action", "name: x\nrules:\n  ca:\n    roots: write\n", []string{`"write" grants nothing more than "read": ca.roots is only read (rotating the roots is ca: {rotate: write})`}},
		{"anchor", "name: x\nrules:\n  service: &s {web: read}\n  node: *s\n", []string{"YAML anchors and aliases are not supported"}},
		{"two documents", "name: x\nrules: {}\n---\nname: y\nrules: {}\n", []string{"a second YAML document follows the first"}},
		{"malformed YAML", "name: [x\n", []string{"malformed YAML"}},
		{"int key for a level", "name: x\nrules:\n  service:\n    web: 1\n", []string{"must be read, write or deny, got int 1"}},
		{"null section key", "name: x\nrules:\n  service:\n    ~: read\n", []string{"rules.service: keys must be strings, got null (line 4)"}},
		{"every error at once", "name: x\nrules:\n  servce: {}\n  acl: wrte\n", []string{"rules.servce: unknown key", `rules.acl: "wrte" is not an access level`}},
		{"null level", "name: x\nrules:\n  node:\n    n1: ~\n", []string{"rules.node.n1: has no level (want read, write or deny) (line 4)"}},
		{"rules not a mapping", "name: x\nrules: [service]\n", []string{"rules: want a mapping, got a list of sections (service, service_prefix,"}},
		{"name not a string", "name: [x]\nrules: {}\n", []string{"name: want a string, got a list (line 1)"}},
		{"JSON unknown key", `{"name":"j","rules":{"nodes":{"n1":"write"}}}`, []string{`rules.nodes: unknown key (did you mean "node"?) (line 1)`}},
		{"JSON duplicate key", `{"name":"j","name":"k","rules":{}}`, []string{`policy "j": name: appears twice (line 1)`}},
		{"null top key", "name: x\nrules: {}\n~: 1\n", []string{"keys must be strings, got null (line 3)"}},
		{"too big", "name: x\ndescription: " + strings.Repeat("a", MaxPolicyBytes) + "\nrules: {}\n", []string{"more than the limit of 65536"}},
		{"long description", "name: x\ndescription: " + strings.Repeat("a", MaxDescriptionLen+1) + "\nrules: {}\n", []string{"description: is 513 bytes, more than 512"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tc.in))
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("error does not match ErrInvalidPolicy: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\nlacks\n  %s", err, w)
				}
			}
		})
	}
}

func TestParsePolicyRuleLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: big\nrules:\n  service:\n")
	for i := 0; i < MaxRules/2+1; i++ {
		b.WriteString("    s" + itoa(i) + ": read\n")
	}
	b.WriteString("  node:\n")
	for i := 0; i < MaxRules/2+1; i++ {
		b.WriteString("    n" + itoa(i) + ": read\n")
	}
	_, err := ParsePolicy([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "rules: has 1002 rules, more than 1000") {
		t.Fatalf("got %v", err)
	}
}

// One section holding more than MaxRules keys is refused by the walker,
// before any rule is validated.
func TestParsePolicySectionLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: big\nrules:\n  service:\n")
	for i := 0; i < MaxRules+1; i++ {
		b.WriteString("    s" + itoa(i) + ": read\n")
	}
	_, err := ParsePolicy([]byte(b.String()))
	if err == nil || !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), "rules.service: has 1001 keys, more than 1000 (line 4)") {
		t.Fatalf("got %v", err)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// A policy decoded from JSON by the API is checked by Validate, with the
// same messages as the parser's, without the line.
func TestValidateDecodedPolicy(t *testing.T) {
	var p Policy
	if err := json.Unmarshal([]byte(`{"name":"x","rules":{"service":{"web*":"read"}}}`), &p); err != nil {
		t.Fatal(err)
	}
	err := p.Validate()
	if err == nil || !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), `policy "x": rules.service.web*: "web*": globs are not supported`) {
		t.Fatalf("Validate = %v", err)
	}
	if err := json.Unmarshal([]byte(`{"name":"x","rules":{"acl":"all"}}`), &p); err == nil || !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("a bad level decoded: %v", err)
	}
}
