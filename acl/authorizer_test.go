package acl

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/policy"
)

// mustPolicy parses a policy named name whose rules section is rules (YAML,
// indented by two spaces).
func mustPolicy(t testing.TB, name, rules string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte("name: " + name + "\nrules:\n" + rules))
	if err != nil {
		t.Fatalf("policy %s: %v", name, err)
	}
	return p
}

type check struct {
	res   Resource
	name  string
	want  Access
	allow bool
}

func TestAuthorizerDecisions(t *testing.T) {
	tests := []struct {
		name     string
		def      DefaultPolicy
		policies []string // rules sections, one per policy
		checks   []check
	}{
		{
			name:     "exact beats prefix",
			def:      DefaultDeny,
			policies: []string{"  service: {web: write}\n  service_prefix: {'': read, we: deny}\n"},
			checks: []check{
				{ResourceService, "web", Write, true},
				{ResourceService, "web", Read, true},
				{ResourceService, "webx", Read, false}, // prefix "we" deny is longer than ""
				{ResourceService, "api", Read, true},
				{ResourceService, "api", Write, false},
			},
		},
		{
			name:     "longest prefix wins",
			def:      DefaultDeny,
			policies: []string{"  service_prefix: {'': deny, db: read, db-admin: deny, db-admin-ro: read}\n"},
			checks: []check{
				{ResourceService, "db-main", Read, true},
				{ResourceService, "db-admin", Read, false},
				{ResourceService, "db-admin-x", Read, false},
				{ResourceService, "db-admin-ro", Read, true},
				{ResourceService, "db-admin-ro-1", Read, true},
				{ResourceService, "d", Read, false},
				{ResourceService, "", Read, false},
			},
		},
		{
			name: "deny wins at equal specificity across policies",
			def:  DefaultAllow,
			policies: []string{
				"  service: {web: write}\n  node_prefix: {n: write}\n",
				"  service: {web: deny}\n  node_prefix: {n: read}\n",
			},
			checks: []check{
				{ResourceService, "web", Read, false},
				{ResourceService, "web", Write, false},
				{ResourceNode, "n1", Write, true}, // write beats read
				{ResourceService, "api", Write, true},
			},
		},
		{
			name: "a more specific allow beats a broader deny of another policy",
			def:  DefaultDeny,
			policies: []string{
				"  service_prefix: {'': deny}\n",
				"  service: {web: read}\n",
			},
			checks: []check{
				{ResourceService, "web", Read, true},
				{ResourceService, "api", Read, false},
			},
		},
		{
			name:     "names match case-insensitively",
			def:      DefaultDeny,
			policies: []string{"  service: {Web: write}\n  node_prefix: {EDGE-: deny, '': read}\n"},
			checks: []check{
				{ResourceService, "web", Write, true},
				{ResourceService, "WEB", Write, true},
				{ResourceNode, "edge-1", Read, false},
				{ResourceNode, "Edge-2", Read, false},
				{ResourceNode, "core-1", Read, true},
			},
		},
		{
			name:     "default allow: rules still limit",
			def:      DefaultAllow,
			policies: []string{"  service: {web: read}\n  operator: {raft: deny}\n"},
			checks: []check{
				{ResourceService, "web", Read, true},
				{ResourceService, "web", Write, false},
				{ResourceService, "api", Write, true},
				{ResourceOperator, OperatorRaft, Read, false},
				{ResourceOperator, OperatorSnapshot, Write, true},
				{ResourceACL, "", Write, true},
			},
		},
		{
			name:     "default deny: only what rules grant",
			def:      DefaultDeny,
			policies: []string{"  operator: {snapshot: read}\n  ca: {token: write, roots: read}\n  agent: write\n  acl: read\n"},
			checks: []check{
				{ResourceOperator, OperatorSnapshot, Read, true},
				{ResourceOperator, OperatorSnapshot, Write, false},
				{ResourceOperator, OperatorRaft, Read, false},
				{ResourceCA, CAToken, Write, true},
				{ResourceCA, CARotate, Write, false},
				{ResourceCA, CARoots, Read, true},
				{ResourceCA, CALeaf, Read, false},
				{ResourceAgent, "", Read, true},
				{ResourceAgent, "ignored", Write, true},
				{ResourceACL, "", Read, true},
				{ResourceACL, "", Write, false},
				{ResourceService, "web", Read, false},
			},
		},
		{
			name:     "policy kinds and the wildcard",
			def:      DefaultDeny,
			policies: []string{"  policy: {'*': read, Split: write, ServiceIdentity: deny}\n  intention_prefix: {'': read}\n  intention: {web: write, '*': deny}\n"},
			checks: []check{
				{ResourcePolicy, "Split", Write, true},
				{ResourcePolicy, "split", Write, true},
				{ResourcePolicy, "Route", Read, true},
				{ResourcePolicy, "Route", Write, false},
				{ResourcePolicy, "ServiceIdentity", Read, false},
				{ResourceIntention, "web", Write, true},
				{ResourceIntention, "api", Read, true},
				{ResourceIntention, "api", Write, false},
				{ResourceIntention, "*", Read, false},
			},
		},
		{
			name:     "no policies",
			def:      DefaultDeny,
			policies: nil,
			checks: []check{
				{ResourceService, "web", Read, false},
				{ResourceAgent, "", Read, false},
			},
		},
		{
			name:     "invalid permissions are refused",
			def:      DefaultAllow,
			policies: nil,
			checks: []check{
				{ResourceService, "web", Deny, false},
				{0, "web", Read, false},
				{Resource(200), "web", Read, false},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ps []*Policy
			for i, rules := range tc.policies {
				ps = append(ps, mustPolicy(t, fmt.Sprintf("p%d", i), rules))
			}
			a := compile("acc", ps, tc.def)
			for _, c := range tc.checks {
				err := a.Check(c.res, c.name, c.want)
				if (err == nil) != c.allow || a.Allowed(c.res, c.name, c.want) != c.allow {
					t.Errorf("%s:%s on %q: Check = %v, want allowed=%v", c.res, c.want, c.name, err, c.allow)
				}
				if err != nil && !errors.Is(err, ErrPermissionDenied) {
					t.Errorf("error %v does not match ErrPermissionDenied", err)
				}
			}
		})
	}
}

func TestManagementAndDisabled(t *testing.T) {
	for name, a := range map[string]*Authorizer{
		"management": {accessorID: "m", allowAll: true},
		"disabled":   allowAll,
	} {
		t.Run(name, func(t *testing.T) {
			for r := Resource(1); r < numResources; r++ {
				for _, want := range []Access{Read, Write} {
					if err := a.Check(r, "anything", want); err != nil {
						t.Errorf("%s:%s: %v", r, want, err)
					}
				}
			}
		})
	}
}

func TestPermissionError(t *testing.T) {
	a := compile("7b1c", []*Policy{mustPolicy(t, "ro", "  service_prefix: {'': read}\n")}, DefaultDeny)
	err := a.Check(ResourceService, "web", Write)
	var pe *PermissionError
	if !errors.As(err, &pe) {
		t.Fatalf("got %T %v", err, err)
	}
	if got, want := err.Error(), `permission denied: token lacks service:write on "web"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if pe.AccessorID != "7b1c" || !strings.Contains(pe.Reason, `rule service_prefix "": read of policy "ro"`) {
		t.Errorf("PermissionError = %+v", pe)
	}
	err = a.Check(ResourceACL, "", Write)
	if got, want := err.Error(), "permission denied: token lacks acl:write"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.As(err, &pe) || pe.Reason != "no rule matches and the default policy is deny" {
		t.Errorf("reason %q", pe.Reason)
	}
	err = a.CheckDocument(policy.KindIntention, "web", Write)
	if got, want := err.Error(), `permission denied: token lacks intention:write on "web"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	err = a.CheckDocument(policy.KindSplit, "web-canary", Write)
	if got, want := err.Error(), `permission denied: token lacks policy:write on "Split"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestCheckDocument(t *testing.T) {
	a := compile("a", []*Policy{mustPolicy(t, "p", "  policy: {Split: write}\n  intention: {web: write}\n")}, DefaultDeny)
	tests := []struct {
		kind  policy.Kind
		name  string
		want  Access
		allow bool
	}{
		{policy.KindSplit, "anything", Write, true},
		{policy.KindRoute, "web", Read, false},
		{policy.KindIntention, "web", Write, true},
		{policy.KindIntention, "api", Read, false},
		{policy.KindIntentionDefaults, policy.DefaultsName, Write, false},
	}
	for _, tc := range tests {
		if err := a.CheckDocument(tc.kind, tc.name, tc.want); (err == nil) != tc.allow || a.AllowedDocument(tc.kind, tc.name, tc.want) != tc.allow {
			t.Errorf("%s %q %s: %v, want allowed=%v", tc.kind, tc.name, tc.want, err, tc.allow)
		}
	}
}

// A decision, allowed or not, and whatever the case of the name, allocates
// nothing: list filtering calls it once per entry.
func TestAllowedAllocs(t *testing.T) {
	a := compile("a", []*Policy{mustPolicy(t, "p", "  service: {web: write}\n  service_prefix: {'': read, db-: deny}\n")}, DefaultDeny)
	for _, name := range []string{"web", "WEB", "db-main", "api", strings.Repeat("x", 300)} {
		if n := testing.AllocsPerRun(100, func() { a.Allowed(ResourceService, name, Write) }); n != 0 && len(name) <= 2*MaxNameLen {
			t.Errorf("Allowed(%q) allocates %v times", name, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		if a.Check(ResourceService, "Web", Write) != nil {
			t.Fatal("denied")
		}
	}); n != 0 {
		t.Errorf("an allowed Check allocates %v times", n)
	}
}
