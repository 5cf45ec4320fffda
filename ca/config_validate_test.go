package ca

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// TestProblemsNamesEveryKey: every wrong key of the section is reported,
// each under its key, and Validate's error is the first of them.
func TestProblemsNamesEveryKey(t *testing.T) {
	c := Config{Provider: ProviderStepCA, TrustDomain: "Mesh!", LeafTTL: time.Second,
		StepCA: StepCAConfig{URL: "http://ca", RootFingerprint: "abc", RootsRefresh: -time.Second}}
	var keys []string
	for _, p := range c.Problems() {
		keys = append(keys, p.Key)
		if p.Reason == "" {
			t.Errorf("%s: no reason", p.Key)
		}
	}
	want := []string{"step_ca.url", "step_ca.root_fingerprint", "step_ca.provisioner", "step_ca.password_file", "step_ca.roots_refresh", "trust_domain", "leaf_ttl"}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("problems at %v, want %v", keys, want)
	}
	err := c.Validate()
	if !errors.Is(err, ErrInvalidConfig) || err.Error() != c.Problems()[0].Error() {
		t.Fatalf("Validate = %v, want the first problem as ErrInvalidConfig", err)
	}
	if p := (Config{}).Problems(); len(p) != 0 {
		t.Fatalf("the defaults have problems: %v", p)
	}
}
