package acl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

// newPolicy returns a policy with a fresh ID.
func newPolicy(t testing.TB, name, rules string) *Policy {
	t.Helper()
	p := mustPolicy(t, name, rules)
	id, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	p.ID = id
	return p
}

func mustSetPolicy(t testing.TB, s Store, p *Policy) *Policy {
	t.Helper()
	out, err := s.SetPolicy(context.Background(), p, 0)
	if err != nil {
		t.Fatalf("SetPolicy(%s): %v", p.Name, err)
	}
	return out
}

// mustToken stores a client token linking policies by name and returns it
// with its secret.
func mustToken(t testing.TB, s Store, ttl time.Duration, now time.Time, policies ...string) (*Token, string) {
	t.Helper()
	spec := TokenSpec{TTL: ttl}
	for _, n := range policies {
		spec.Policies = append(spec.Policies, PolicyLink{Name: n})
	}
	tok, secret, err := NewToken(spec, now)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.SetToken(context.Background(), tok, 0)
	if err != nil {
		t.Fatalf("SetToken: %v", err)
	}
	return stored, secret
}

func TestBootstrapOnce(t *testing.T) {
	ctx := context.Background()
	s := NewMemStore()
	tok, secret, err := Bootstrap(ctx, s, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Type != TypeManagement || tok.SecretHash != HashSecret(secret) || CheckSecret("secret", secret) != nil {
		t.Fatalf("bootstrap token %+v", tok)
	}
	if got, err := s.TokenBySecret(HashSecret(secret)); err != nil || got.AccessorID != tok.AccessorID {
		t.Fatalf("stored token: %v %v", got, err)
	}
	first := tok.CreateIndex

	// A second bootstrap is refused and names the reset index.
	_, _, err = Bootstrap(ctx, s, t0, 0)
	if !errors.Is(err, ErrBootstrapDone) || !strings.Contains(err.Error(), fmt.Sprintf("(reset index: %d)", first)) {
		t.Fatalf("second bootstrap: %v", err)
	}
	// So is a reset with the wrong index.
	if _, _, err := Bootstrap(ctx, s, t0, first+1); !errors.Is(err, ErrBootstrapDone) {
		t.Fatalf("bootstrap with a wrong reset index: %v", err)
	}
	// The right reset index allows one more, and only one.
	tok2, _, err := Bootstrap(ctx, s, t0, first)
	if err != nil {
		t.Fatalf("reset bootstrap: %v", err)
	}
	if _, _, err := Bootstrap(ctx, s, t0, first); !errors.Is(err, ErrBootstrapDone) {
		t.Fatalf("the same reset index served twice: %v", err)
	}
	if _, _, err := Bootstrap(ctx, s, t0, tok2.CreateIndex); err != nil {
		t.Fatalf("the new reset index: %v", err)
	}
	// Both earlier tokens still exist: a reset adds a token, it does not
	// take one away.
	if _, err := s.Token(tok.AccessorID); err != nil {
		t.Fatal(err)
	}
}

func TestBootstrapRefusesClientToken(t *testing.T) {
	st := NewState()
	tok, _, _ := NewToken(TokenSpec{}, t0)
	if _, err := st.Bootstrap(tok, 0, 1); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("bootstrap with a client token: %v", err)
	}
	if st.BootstrapIndex() != 0 {
		t.Fatal("a refused bootstrap counted")
	}
}

func TestStateWrites(t *testing.T) {
	ctx := context.Background()
	s := NewMemStore()
	ro := mustSetPolicy(t, s, newPolicy(t, "ro", "  service_prefix: {'': read}\n"))

	t.Run("names are unique, case-insensitively", func(t *testing.T) {
		_, err := s.SetPolicy(ctx, newPolicy(t, "RO", "  acl: read\n"), 0)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `the name "RO" is taken by policy `+ro.ID) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("compare-and-set", func(t *testing.T) {
		p := *ro
		p.Description = "changed"
		if _, err := s.SetPolicy(ctx, &p, ro.ModifyIndex+7); !errors.Is(err, ErrConflict) {
			t.Fatalf("stale cas: %v", err)
		}
		out, err := s.SetPolicy(ctx, &p, ro.ModifyIndex)
		if err != nil || out.CreateIndex != ro.CreateIndex || out.ModifyIndex <= ro.ModifyIndex {
			t.Fatalf("cas update: %+v %v", out, err)
		}
		ro = out
	})
	t.Run("links by name get their ID", func(t *testing.T) {
		tok, _ := mustToken(t, s, 0, t0, "ro")
		if len(tok.Policies) != 1 || tok.Policies[0].ID != ro.ID {
			t.Fatalf("links %+v", tok.Policies)
		}
	})
	t.Run("a link to no policy is refused", func(t *testing.T) {
		tok, _, _ := NewToken(TokenSpec{Policies: []PolicyLink{{Name: "nope"}}}, t0)
		if _, err := s.SetToken(ctx, tok, 0); !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), `no policy named "nope"`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a policy linked twice is refused", func(t *testing.T) {
		tok, _, _ := NewToken(TokenSpec{Policies: []PolicyLink{{Name: "ro"}, {ID: ro.ID}}}, t0)
		if _, err := s.SetToken(ctx, tok, 0); !errors.Is(err, ErrInvalidPolicy) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a linked policy cannot be deleted", func(t *testing.T) {
		err := s.DeletePolicy(ctx, ro.ID, 0)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "is linked by 1 tokens") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a secret cannot change", func(t *testing.T) {
		tok, _ := mustToken(t, s, 0, t0)
		c := *tok
		c.SecretHash = HashSecret("mwt_" + strings.Repeat("B", SecretEncodedLen))
		if _, err := s.SetToken(ctx, &c, 0); !errors.Is(err, ErrConflict) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("builtins", func(t *testing.T) {
		if err := s.DeleteToken(ctx, AnonymousAccessorID, 0); !errors.Is(err, ErrConflict) {
			t.Errorf("delete anonymous: %v", err)
		}
		if err := s.DeletePolicy(ctx, BuiltinCatalogReadPolicyID, 0); !errors.Is(err, ErrConflict) {
			t.Errorf("delete builtin policy: %v", err)
		}
		b, _ := s.Policy(BuiltinCatalogReadPolicyID)
		c := clonePolicy(b)
		c.Rules.ACL = Write
		if _, err := s.SetPolicy(ctx, c, 0); !errors.Is(err, ErrConflict) {
			t.Errorf("change builtin policy: %v", err)
		}
		// The anonymous token may be relinked: here, to nothing.
		anon, _ := s.Token(AnonymousAccessorID)
		a := cloneToken(anon)
		a.Policies = nil
		if _, err := s.SetToken(ctx, a, 0); err != nil {
			t.Errorf("relink anonymous: %v", err)
		}
		a.Type = TypeManagement
		if _, err := s.SetToken(ctx, a, 0); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("anonymous as management: %v", err)
		}
	})
	t.Run("deletes", func(t *testing.T) {
		p := mustSetPolicy(t, s, newPolicy(t, "tmp", "  agent: read\n"))
		tok, secret := mustToken(t, s, 0, t0, "tmp")
		if err := s.DeleteToken(ctx, tok.AccessorID, tok.ModifyIndex+1); !errors.Is(err, ErrConflict) {
			t.Fatalf("stale cas: %v", err)
		}
		if err := s.DeleteToken(ctx, tok.AccessorID, tok.ModifyIndex); err != nil {
			t.Fatal(err)
		}
		if _, err := s.TokenBySecret(HashSecret(secret)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted token still found by secret: %v", err)
		}
		if err := s.DeletePolicy(ctx, p.ID, 0); err != nil {
			t.Fatalf("policy no longer linked: %v", err)
		}
		if _, err := s.PolicyByName("tmp"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted policy found by name: %v", err)
		}
		if err := s.DeleteToken(ctx, tok.AccessorID, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	})
	t.Run("a refused write changes nothing", func(t *testing.T) {
		before := s.Index()
		_, _ = s.SetPolicy(ctx, newPolicy(t, "ro", "  acl: read\n"), 0)
		if s.Index() != before {
			t.Fatalf("index moved from %d to %d", before, s.Index())
		}
	})
}

func TestStateIndexMustAdvance(t *testing.T) {
	st := NewState()
	if _, err := st.SetPolicy(newPolicy(t, "a", "  acl: read\n"), 0, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetPolicy(newPolicy(t, "b", "  acl: read\n"), 0, 5); !errors.Is(err, ErrConflict) {
		t.Fatalf("a write at the same index: %v", err)
	}
}

func TestTokenValidate(t *testing.T) {
	good := func() *Token {
		tok, _, err := NewToken(TokenSpec{Description: "x"}, t0)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name   string
		mutate func(*Token)
		want   string
	}{
		{"accessor not a UUID", func(k *Token) { k.AccessorID = "web" }, `accessor ID "web" is not a UUID`},
		{"accessor in capitals", func(k *Token) { k.AccessorID = strings.ToUpper(k.AccessorID) }, "is not a UUID"},
		{"no secret", func(k *Token) { k.SecretHash = SecretHash{} }, "no secret hash"},
		{"unknown type", func(k *Token) { k.Type = "root" }, `type "root" is unknown (want client or management)`},
		{"management with policies", func(k *Token) {
			k.Type = TypeManagement
			k.Policies = []PolicyLink{{Name: "x"}}
		}, "links no policies"},
		{"empty link", func(k *Token) { k.Policies = []PolicyLink{{}} }, "policies[0] has neither an ID nor a name"},
		{"too many links", func(k *Token) { k.Policies = make([]PolicyLink, MaxTokenPolicies+1) }, "more than 64"},
		{"expires before creation", func(k *Token) { k.ExpirationTime = k.CreateTime.Add(-time.Second) }, "not after its creation"},
		{"long description", func(k *Token) { k.Description = strings.Repeat("d", MaxDescriptionLen+1) }, "more than 512"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := good()
			tc.mutate(k)
			err := k.Validate()
			if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	if _, _, err := NewToken(TokenSpec{TTL: time.Second}, t0); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("a one-second TTL: %v", err)
	}
}

func TestDumpAndLoad(t *testing.T) {
	ctx := context.Background()
	s := NewMemStore()
	if _, _, err := Bootstrap(ctx, s, t0, 0); err != nil {
		t.Fatal(err)
	}
	mustSetPolicy(t, s, newPolicy(t, "ro", "  service_prefix: {'': read}\n"))
	tok, secret := mustToken(t, s, time.Hour, t0, "ro")

	b, err := json.Marshal(s.Dump())
	if err != nil {
		t.Fatal(err)
	}
	var d Dump
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	st, err := LoadState(d)
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	got, err := st.TokenBySecret(HashSecret(secret))
	if err != nil || got.AccessorID != tok.AccessorID || !got.ExpirationTime.Equal(tok.ExpirationTime) || got.Policies[0].Name != "ro" {
		t.Fatalf("loaded token %+v, %v", got, err)
	}
	if st.Index() != s.Index() || st.BootstrapIndex() == 0 || st.CheckBootstrap(0) == nil {
		t.Fatalf("loaded index %d bootstrap %d", st.Index(), st.BootstrapIndex())
	}

	t.Run("damaged dumps are refused whole", func(t *testing.T) {
		for name, damage := range map[string]func(*Dump){
			"dangling link":      func(d *Dump) { d.Policies = nil },
			"duplicate token":    func(d *Dump) { d.Tokens = append(d.Tokens, d.Tokens[len(d.Tokens)-1]) },
			"bad policy":         func(d *Dump) { d.Policies[len(d.Policies)-1].Rules.ACL = 9 },
			"bootstrap too late": func(d *Dump) { d.BootstrapIndex = d.Index + 1 },
		} {
			var c Dump
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			damage(&c)
			if _, err := LoadState(c); !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("%s: LoadState = %v", name, err)
			}
		}
	})
}
