package acl

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParsePolicy feeds arbitrary bytes to the policy parser: it must never
// panic, every error must be an ErrInvalidPolicy, and whatever it accepts
// must validate, compile, and come back unchanged through its YAML file form
// and its JSON API form.
func FuzzParsePolicy(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.*")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"name: x\nrules: {}\n",
		"name: x\nrules:\n  service_prefix: {'': read, db-: deny}\n  service: {DB-main: write}\n",
		"name: x\nrules:\n  policy: {'*': read, split: write}\n  intention: {'*': deny}\n",
		"name: x\nrules:\n  operator: {raft: read, snapshot: write, keyring: deny}\n  ca: {roots: read, token: write}\n  acl: write\n  agent: read\n",
		"name: x\nrules:\n  service: &a {web: read}\n  node: *a\n",
		"name: x\nrules:\n  service: {web: {policy: write}}\n",
		`{"name":"j","rules":{"node":{"n1":"write"},"node_prefix":{"":"read"}}}`,
		"name: x\nrules: {}\n---\nname: y\n",
		"name: [\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not match ErrInvalidPolicy", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted policy does not validate: %v", err)
		}
		a := compile("fuzz", []*Policy{p}, DefaultDeny)
		for r := Resource(1); r < numResources; r++ {
			a.Allowed(r, p.Name, Write)
		}
		y, err := yaml.Marshal(p)
		if err != nil {
			t.Fatalf("yaml.Marshal: %v", err)
		}
		back, err := ParsePolicy(y)
		if err != nil {
			t.Fatalf("the YAML form does not parse: %v\n%s", err, y)
		}
		if !reflect.DeepEqual(back, p) {
			t.Fatalf("YAML round trip changed the policy:\n%#v\n%#v", p, back)
		}
		j, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		var fromJSON Policy
		if err := json.Unmarshal(j, &fromJSON); err != nil || !reflect.DeepEqual(&fromJSON, p) {
			t.Fatalf("JSON round trip: %v\n%s", err, j)
		}
	})
}

// FuzzTokenFromHeader feeds arbitrary X-Meshwork-Token and Authorization
// values, in which "SECRET" stands for a real secret: parsing must never
// panic, what it accepts must be a well-formed secret taken from the input,
// and no error may repeat the secret.
func FuzzTokenFromHeader(f *testing.F) {
	for _, s := range [][2]string{
		{"SECRET", ""},
		{"", "Bearer SECRET"},
		{"SECRET", "bearer  SECRET"},
		{"SECRET", "Bearer SECRETX"},
		{"", "SECRET"},
		{"", "Basic SECRET"},
		{"SECRET\x00", ""},
		{" SECRET ", "Bearer\tSECRET"},
		{"3f2504e0-4f89-41d3-9a0c-0305e82c3301", ""},
		{"mwt_", "Bearer mwt_"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, xToken, auth string) {
		xToken = strings.ReplaceAll(xToken, "SECRET", canary)
		auth = strings.ReplaceAll(auth, "SECRET", canary)
		h := http.Header{}
		if xToken != "" {
			h[HeaderToken] = []string{xToken}
		}
		if auth != "" {
			h["Authorization"] = []string{auth}
		}
		got, err := TokenFromHeader(h)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v does not match ErrMalformedToken", err)
			}
			if strings.Contains(err.Error(), canary[len(SecretPrefix):]) {
				t.Fatalf("the error repeats the secret: %v", err)
			}
			return
		}
		if got == "" {
			if xToken != "" || auth != "" {
				t.Fatalf("headers %q, %q gave no token and no error", xToken, auth)
			}
			return
		}
		if err := CheckSecret("fuzz", got); err != nil {
			t.Fatalf("accepted a malformed secret: %v", err)
		}
		if !strings.Contains(xToken, got) && !strings.Contains(auth, got) {
			t.Fatalf("accepted %q, which is in neither header", got)
		}
	})
}
