package acl

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// How a token travels. The API reads it from HeaderToken or from
// `Authorization: Bearer <secret>`; the CLI takes it from --token,
// --token-file or EnvToken and sends it in HeaderToken.
const (
	// HeaderToken is the request header that carries a secret.
	HeaderToken = "X-Meshwork-Token"
	// EnvToken is the environment variable the CLI reads a secret from.
	EnvToken = "MESHWORK_HTTP_TOKEN"
	// MaxHeaderLen bounds a header value read as a token: a secret is
	// SecretLen bytes, and nothing much longer deserves a look.
	MaxHeaderLen = 256
	// MaxTokenFileBytes bounds a --token-file.
	MaxTokenFileBytes = 4096
)

// TokenFromRequest returns the secret a request presents, or "" when it
// presents none (the anonymous token then applies). It is TokenFromHeader,
// and it also refuses a token in the URL (?token=), which would end up in
// access logs and shell history.
func TokenFromRequest(r *http.Request) (string, error) {
	if q := r.URL.RawQuery; q != "" && strings.Contains(q, "token") {
		if v, err := url.ParseQuery(q); err == nil && v.Has("token") {
			return "", fmt.Errorf("%w: a token in the URL (?token=) is refused, since URLs end up in logs; send the %s header", ErrMalformedToken, HeaderToken)
		}
	}
	return TokenFromHeader(r.Header)
}

// TokenFromHeader returns the secret in HeaderToken or in an Authorization
// header of the Bearer scheme, or "" when neither is present. Both may be
// sent if they agree. Errors wrap ErrMalformedToken and never repeat the
// value, which may be a secret.
func TokenFromHeader(h http.Header) (string, error) {
	var fromHeader, fromAuth string
	switch vs := h.Values(HeaderToken); len(vs) {
	case 0:
	case 1:
		fromHeader = vs[0]
		if err := CheckSecret(HeaderToken, fromHeader); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("%w: %s appears %d times; send it once", ErrMalformedToken, HeaderToken, len(vs))
	}
	switch vs := h.Values("Authorization"); len(vs) {
	case 0:
	case 1:
		s, err := bearer(vs[0])
		if err != nil {
			return "", err
		}
		fromAuth = s
	default:
		return "", fmt.Errorf("%w: Authorization appears %d times; send it once", ErrMalformedToken, len(vs))
	}
	if fromHeader != "" && fromAuth != "" && fromHeader != fromAuth {
		return "", fmt.Errorf("%w: %s and Authorization carry different tokens; send one", ErrMalformedToken, HeaderToken)
	}
	if fromHeader != "" {
		return fromHeader, nil
	}
	return fromAuth, nil
}

// bearer reads `Bearer <secret>` (the scheme in any case, RFC 9110).
func bearer(v string) (string, error) {
	if len(v) > MaxHeaderLen {
		return "", fmt.Errorf("%w: Authorization is %d bytes, more than %d", ErrMalformedToken, len(v), MaxHeaderLen)
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// The scheme is not repeated: a client that forgot it sent the
		// secret in its place.
		return "", fmt.Errorf("%w: Authorization: want \"Bearer <secret>\"; only the Bearer scheme is supported", ErrMalformedToken)
	}
	secret := strings.TrimLeft(rest, " ")
	if secret == "" {
		return "", fmt.Errorf("%w: Authorization: Bearer carries no token", ErrMalformedToken)
	}
	if err := CheckSecret("Authorization: Bearer", secret); err != nil {
		return "", err
	}
	return secret, nil
}

// SetToken puts secret on an outgoing request's header, as the CLI does.
// An empty secret sets nothing: the request goes as anonymous.
func SetToken(h http.Header, secret string) {
	if secret != "" {
		h.Set(HeaderToken, secret)
	}
}

// SecretFromFile reads the secret of a --token-file: the whole file, with
// surrounding white space (a final newline) removed. from names the file in
// errors.
func SecretFromFile(from string, data []byte) (string, error) {
	if len(data) > MaxTokenFileBytes {
		return "", fmt.Errorf("%w: %s is %d bytes, more than %d: it should hold one secret", ErrMalformedToken, from, len(data), MaxTokenFileBytes)
	}
	s := string(bytes.TrimSpace(data))
	if s == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrMalformedToken, from)
	}
	if err := CheckSecret(from, s); err != nil {
		return "", err
	}
	return s, nil
}

// CheckSecret checks that s has the form of a secret (SecretPrefix and 43
// characters of base64url). from names where s came from, for the error,
// which never repeats s. A UUID is told apart: it is an accessor ID given
// where the secret belongs.
func CheckSecret(from, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrMalformedToken, from)
	case len(s) > MaxHeaderLen:
		return fmt.Errorf("%w: %s is %d bytes, more than %d", ErrMalformedToken, from, len(s), MaxHeaderLen)
	case looksLikeUUID(s):
		return fmt.Errorf("%w: %s holds a UUID, which is what an accessor ID looks like: pass the token's secret (%s...), not its accessor ID", ErrMalformedToken, from, SecretPrefix)
	case !strings.HasPrefix(s, SecretPrefix):
		return fmt.Errorf("%w: %s is not a token secret: want %q followed by %d characters of base64url", ErrMalformedToken, from, SecretPrefix, SecretEncodedLen)
	case len(s) != SecretLen:
		return fmt.Errorf("%w: %s is %d characters long; a secret is %d", ErrMalformedToken, from, len(s), SecretLen)
	}
	for i := len(SecretPrefix); i < len(s); i++ {
		if c := s[i]; !(isAlnum(c) || c == '-' || c == '_') {
			return fmt.Errorf("%w: %s: character %d is not base64url (letters, digits, '-', '_')", ErrMalformedToken, from, i+1)
		}
	}
	return nil
}

// looksLikeUUID reports whether s is a UUID in either case.
func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'):
			return false
		}
	}
	return true
}
