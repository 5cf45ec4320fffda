package keytls

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// encodings are the forms of base64 a key may be written in.
var encodings = []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding}

// DecodeKey decodes a cluster or server key: base64, padded or not,
// standard or URL alphabet, of KeySize bytes. Its error says what is wrong
// in an operator's words, never repeats the key and names no field:
// ParseKey wraps it in ErrBadKey, agent/config names the YAML key.
func DecodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range encodings {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("decodes to %d bytes, want %d (make a key with `meshwork keygen`)", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, errors.New("is not valid base64 (make a key with `meshwork keygen`)")
}
