package keytls

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestDecodeKey(t *testing.T) {
	raw := make([]byte, KeySize)
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	for _, enc := range encodings {
		if b, err := DecodeKey(" " + enc.EncodeToString(raw) + "\n"); err != nil || string(b) != string(raw) {
			t.Errorf("DecodeKey(%v form) = %x, %v", enc, b, err)
		}
	}
	short := base64.StdEncoding.EncodeToString(raw[:19])
	for _, tc := range []struct{ in, want string }{
		{short, "decodes to 19 bytes, want 32"},
		{"not-base64-at-all!", "is not valid base64"},
		{"", "decodes to 0 bytes"},
	} {
		_, err := DecodeKey(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeKey(%q) = %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && tc.in != "" && strings.Contains(err.Error(), tc.in) {
			t.Errorf("DecodeKey repeats the key: %v", err)
		}
		if _, perr := ParseKey(tc.in); !errors.Is(perr, ErrBadKey) {
			t.Errorf("ParseKey(%q) = %v, want ErrBadKey", tc.in, perr)
		}
	}
}
