package acl

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A fixed secret whose body no error message could contain by chance.
const canary = SecretPrefix + "Q0FOQVJZ-Q0FOQVJZ_Q0FOQVJZ0123456789abcdefg"

func TestTokenFromHeader(t *testing.T) {
	other := SecretPrefix + strings.Repeat("Z", SecretEncodedLen)
	tests := []struct {
		name    string
		headers map[string][]string
		want    string
		err     string // "" for success
	}{
		{"none", nil, "", ""},
		{"header", map[string][]string{HeaderToken: {canary}}, canary, ""},
		{"bearer", map[string][]string{"Authorization": {"Bearer " + canary}}, canary, ""},
		{"bearer in lower case, extra spaces", map[string][]string{"Authorization": {"bearer   " + canary}}, canary, ""},
		{"both, agreeing", map[string][]string{HeaderToken: {canary}, "Authorization": {"Bearer " + canary}}, canary, ""},
		{"both, differing", map[string][]string{HeaderToken: {canary}, "Authorization": {"Bearer " + other}}, "", "X-Meshwork-Token and Authorization carry different tokens; send one"},
		{"header twice", map[string][]string{HeaderToken: {canary, canary}}, "", "X-Meshwork-Token appears 2 times; send it once"},
		{"authorization twice", map[string][]string{"Authorization": {"Bearer " + canary, "Bearer " + canary}}, "", "Authorization appears 2 times"},
		{"empty header", map[string][]string{HeaderToken: {""}}, "", "X-Meshwork-Token is empty"},
		{"basic auth", map[string][]string{"Authorization": {"Basic dXNlcjpwYXNz"}}, "", `Authorization: want "Bearer <secret>"; only the Bearer scheme is supported`},
		{"no scheme", map[string][]string{"Authorization": {canary}}, "", "only the Bearer scheme is supported"},
		{"bearer alone", map[string][]string{"Authorization": {"Bearer"}}, "", "Authorization: Bearer carries no token"},
		{"accessor ID", map[string][]string{HeaderToken: {"3F2504E0-4F89-41D3-9A0C-0305E82C3301"}}, "", "holds a UUID, which is what an accessor ID looks like: pass the token's secret (mwt_...), not its accessor ID"},
		{"not a secret", map[string][]string{HeaderToken: {"hunter2hunter2"}}, "", `X-Meshwork-Token is not a token secret: want "mwt_" followed by 43 characters of base64url`},
		{"short", map[string][]string{HeaderToken: {canary[:20]}}, "", "X-Meshwork-Token is 20 characters long; a secret is 47"},
		{"bad character", map[string][]string{"Authorization": {"Bearer " + canary[:30] + "+" + canary[31:]}}, "", "Authorization: Bearer: character 31 is not base64url"},
		{"too long", map[string][]string{HeaderToken: {strings.Repeat("a", MaxHeaderLen+1)}}, "", "X-Meshwork-Token is 257 bytes, more than 256"},
		{"authorization too long", map[string][]string{"Authorization": {"Bearer " + strings.Repeat("a", MaxHeaderLen)}}, "", "Authorization is 263 bytes, more than 256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header(tc.headers)
			got, err := TokenFromHeader(h)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("TokenFromHeader = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrMalformedToken) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
			if strings.Contains(err.Error(), canary[len(SecretPrefix):]) || strings.Contains(err.Error(), "dXNlcjpwYXNz") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error repeats the value: %v", err)
			}
		})
	}
}

func TestTokenFromRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/catalog/services?index=5&token="+canary, nil)
	if _, err := TokenFromRequest(r); !errors.Is(err, ErrMalformedToken) || !strings.Contains(err.Error(), "a token in the URL (?token=) is refused") {
		t.Fatalf("token in the URL: %v", err)
	}
	r = httptest.NewRequest("GET", "/v1/catalog/services?tokens_of_affection=1", nil)
	r.Header.Set("authorization", "Bearer "+canary)
	if got, err := TokenFromRequest(r); err != nil || got != canary {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestSetTokenRoundTrip(t *testing.T) {
	h := http.Header{}
	SetToken(h, "")
	if len(h) != 0 {
		t.Fatalf("an empty secret set %v", h)
	}
	SetToken(h, canary)
	if got, err := TokenFromHeader(h); err != nil || got != canary {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestSecretFromFile(t *testing.T) {
	tests := []struct {
		name string
		in   string
		err  string
	}{
		{"with a newline", canary + "\n", ""},
		{"with CRLF and spaces", "  " + canary + "\r\n", ""},
		{"empty", "\n", "token.txt is empty"},
		{"two lines", canary + "\n" + canary + "\n", "token.txt is 95 characters long"},
		{"huge", strings.Repeat("a", MaxTokenFileBytes+1), "token.txt is 4097 bytes, more than 4096: it should hold one secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SecretFromFile("token.txt", []byte(tc.in))
			if tc.err == "" {
				if err != nil || got != canary {
					t.Fatalf("got %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, ErrMalformedToken) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestNewSecretShape(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckSecret("new", s); err != nil || seen[s] {
			t.Fatalf("secret %d: %v (repeated: %v)", i, err, seen[s])
		}
		seen[s] = true
		id, err := NewID()
		if err != nil || !validUUID(id) || id[14] != '4' {
			t.Fatalf("NewID = %q, %v", id, err)
		}
	}
}
