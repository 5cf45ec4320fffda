package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshwork/meshwork/acl"
)

// TestClientSendsToken: a client made WithToken sends the secret in the
// header the agent reads; the client it came from sends none.
func TestClientSendsToken(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := acl.TokenFromRequest(r)
		if err != nil {
			t.Errorf("token: %v", err)
		}
		got = append(got, s)
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	secret, _ := acl.NewSecret()
	c := NewClient(srv.URL)
	ctx := t.Context()
	if _, err := c.WithToken(secret).Self(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Self(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != secret || got[1] != "" {
		t.Fatalf("tokens received %q", got)
	}
}

// FuzzACLPolicyBody feeds arbitrary JSON to what the ACL API does with the
// body of a policy write: decode, then validate. It must never panic, and a
// policy that validates must come back the same through JSON.
func FuzzACLPolicyBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"web","rules":{"service":{"web":"write"},"service_prefix":{"":"read"}}}`,
		`{"name":"ops","rules":{"operator":{"raft":"write"},"ca":{"roots":"write"},"acl":"read","agent":"deny"}}`,
		`{"name":"p","rules":{"policy":{"*":"read","Intention":"write"}}}`,
		`{"name":"","rules":{"service":{"a*":"read"}}}`,
		`{"name":"x","rules":{"service":{"web":"wirte"}}}`,
		`{"name":"x","rules":{"acl":7}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p ACLPolicy
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if dec.Decode(&p) != nil {
			return
		}
		pol := &acl.Policy{ID: "11111111-1111-4111-8111-111111111111", Name: p.Name, Description: p.Description, Rules: p.Rules}
		if err := pol.Validate(); err != nil {
			if !errors.Is(err, acl.ErrInvalidPolicy) {
				t.Fatalf("a refusal that is not ErrInvalidPolicy: %v", err)
			}
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("a valid policy does not encode: %v", err)
		}
		var back ACLPolicy
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		b2, _ := json.Marshal(back)
		if !bytes.Equal(b, b2) {
			t.Fatalf("a valid policy changed through JSON:\n%s\n%s", b, b2)
		}
	})
}
