package gossip

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/httpjson"
)

func TestParseKey(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ParseKey(k)
	if err != nil || len(raw) != KeySize {
		t.Fatalf("ParseKey(GenerateKey()) = %d bytes, %v", len(raw), err)
	}
	k2, _ := GenerateKey()
	if k2 == k {
		t.Fatal("two generated keys are equal")
	}
	for _, ok := range []string{
		base64.StdEncoding.EncodeToString(make([]byte, 16)),
		base64.StdEncoding.EncodeToString(make([]byte, 24)),
		" " + k + "\n",
	} {
		if _, err := ParseKey(ok); err != nil {
			t.Errorf("ParseKey(%q): %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"":                         "empty",
		"!!!":                      "not base64",
		"c2hvcnQ=":                 "key of 5 bytes",
		k[:len(k)-4]:               "bytes",
		strings.Repeat("QUFB", 16): "key of 48 bytes",
	} {
		_, err := ParseKey(in)
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%q) = %v, want ErrBadKey with %q", in, err, want)
		}
	}
}

func TestKeyringFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gossip", "keyring.json")
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	cfg := FastTestConfig("n1")
	cfg.Keyring = []string{k1}
	cfg.KeyringFile = path
	g, err := New(cfg, Deps{Store: catalog.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })

	// Start wrote the configured key, readable by the owner only.
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("keyring file not written: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file mode %v, want 0600", st.Mode().Perm())
	}
	ctx := context.Background()
	if _, err := g.InstallKey(ctx, k2); err != nil {
		t.Fatalf("InstallKey: %v", err)
	}
	if _, err := g.UseKey(ctx, k2); err != nil {
		t.Fatalf("UseKey: %v", err)
	}
	if _, err := g.RemoveKey(ctx, k2); !errors.Is(err, ErrPrimaryKey) {
		t.Fatalf("RemoveKey(primary) = %v, want ErrPrimaryKey", err)
	}
	if _, err := g.RemoveKey(ctx, k1); err != nil {
		t.Fatalf("RemoveKey: %v", err)
	}
	keys, err := ReadKeyringFile(path)
	if err != nil || len(keys) != 1 || base64.StdEncoding.EncodeToString(keys[0]) != k2 {
		t.Fatalf("keyring file after rotation: %d keys, %v; want only the new key", len(keys), err)
	}
	resp, err := g.ListKeys(ctx)
	if err != nil || resp.NumNodes != 1 || resp.Keys[k2] != 1 || resp.PrimaryKeys[k2] != 1 || len(resp.Keys) != 1 {
		t.Fatalf("ListKeys = %+v, %v", resp, err)
	}

	// A bad file is reported, not ignored.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`["nope"]`), 0o600)
	if _, err := ReadKeyringFile(bad); !errors.Is(err, ErrKeyringFile) || !errors.Is(err, ErrBadKey) {
		t.Fatalf("ReadKeyringFile(bad) = %v", err)
	}
}

func TestKeyringWithoutEncryption(t *testing.T) {
	g, err := New(FastTestConfig("plain"), Deps{Store: catalog.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.ListKeys(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("ListKeys before Start = %v, want ErrNotStarted", err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	k, _ := GenerateKey()
	if _, err := g.InstallKey(context.Background(), k); !errors.Is(err, ErrNoEncryption) {
		t.Fatalf("InstallKey on a plain cluster = %v, want ErrNoEncryption", err)
	}
}

type fakeKeyring struct {
	op, key string
	err     error
}

func (f *fakeKeyring) do(op, key string) (*KeyringResponse, error) {
	f.op, f.key = op, key
	if f.err != nil && !errors.Is(f.err, ErrKeyringPartial) {
		return nil, f.err
	}
	return &KeyringResponse{Keys: map[string]int{"k": 3}, PrimaryKeys: map[string]int{"k": 3}, NumNodes: 3, NumResponses: 3}, f.err
}
func (f *fakeKeyring) ListKeys(context.Context) (*KeyringResponse, error) { return f.do("list", "") }
func (f *fakeKeyring) InstallKey(_ context.Context, k string) (*KeyringResponse, error) {
	return f.do("install", k)
}
func (f *fakeKeyring) UseKey(_ context.Context, k string) (*KeyringResponse, error) {
	return f.do("use", k)
}
func (f *fakeKeyring) RemoveKey(_ context.Context, k string) (*KeyringResponse, error) {
	return f.do("remove", k)
}

func TestKeyringHandler(t *testing.T) {
	key, _ := GenerateKey()
	body := `{"key":"` + key + `"}`
	tests := []struct {
		name, method, path, body string
		err                      error
		status                   int
		op, code                 string
		want                     string
	}{
		{"list", "GET", KeyringPath, "", nil, 200, "list", "", `"num_nodes": 3`},
		{"install", "PUT", KeyringInstallPath, body, nil, 200, "install", "", `"keys"`},
		{"use", "PUT", KeyringUsePath, body, nil, 200, "use", "", `"primary_keys"`},
		{"remove", "DELETE", KeyringPath, body, nil, 200, "remove", "", `"num_responses": 3`},
		{"deprecated install", "POST", KeyringPath, body, nil, 200, "install", "", `"keys"`},
		{"deprecated use", "PUT", KeyringPath, body, nil, 200, "use", "", `"primary_keys"`},
		{"bad key", "PUT", KeyringInstallPath, `{"key":"abc"}`, nil, 400, "", "invalid", `field \"key\"`},
		{"unknown field", "PUT", KeyringInstallPath, `{"kee":"x"}`, nil, 400, "", "invalid", `unknown field`},
		{"empty body", "PUT", KeyringUsePath, ``, nil, 400, "", "invalid", `body is empty`},
		{"primary", "DELETE", KeyringPath, body, ErrPrimaryKey, 400, "remove", "primary_key", `primary key cannot be removed`},
		{"no encryption", "PUT", KeyringInstallPath, body, ErrNoEncryption, 400, "install", "encryption_disabled", `not enabled`},
		{"partial", "PUT", KeyringUsePath, body, fmt.Errorf("gossip: keyring use: %w: node-2: no answer in time", ErrKeyringPartial), 500, "use", "keyring_partial", `node-2: no answer in time`},
		{"not started", "GET", KeyringPath, "", ErrNotStarted, 503, "list", "not_ready", `not started`},
		{"method", "PATCH", KeyringPath, body, nil, 405, "", "method_not_allowed", `method PATCH is not allowed`},
		{"unknown path", "PUT", KeyringPath + "/nope", body, nil, 404, "", "unknown_endpoint", `no endpoint`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeKeyring{err: tc.err}
			rec := httptest.NewRecorder()
			NewKeyringHandler(f).ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("%s: %d %s; want %d containing %q", tc.method, rec.Code, rec.Body.String(), tc.status, tc.want)
			}
			if f.op != tc.op {
				t.Fatalf("operation %q called, want %q", f.op, tc.op)
			}
			if tc.op != "" && tc.op != "list" && f.key != key {
				t.Fatalf("key %q passed, want %q", f.key, key)
			}
			if rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("content type %q", rec.Header().Get("Content-Type"))
			}
			if tc.status >= 400 {
				var e httpjson.ErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != tc.code || e.Error == "" {
					t.Fatalf("error body %s (%v); want code %q", rec.Body, err, tc.code)
				}
			}
			if deprecated := rec.Header().Get(httpjson.DeprecationHeader) != ""; deprecated != strings.HasPrefix(tc.name, "deprecated") {
				t.Fatalf("Deprecation header %q", rec.Header().Get(httpjson.DeprecationHeader))
			}
		})
	}
}
