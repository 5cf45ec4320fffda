package vip

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckPrefix(t *testing.T) {
	tests := []struct {
		prefix netip.Prefix
		want   string // "" means usable
	}{
		{DefaultPrefix, ""},
		{netip.MustParsePrefix("127.241.0.0/16"), ""},
		{netip.MustParsePrefix("127.250.3.0/24"), ""},
		{netip.MustParsePrefix("10.0.0.0/16"), "is not inside 127.0.0.0/8"},
		{netip.MustParsePrefix("126.0.0.0/7"), "is not inside 127.0.0.0/8"},
		{netip.MustParsePrefix("127.0.0.0/12"), "overlaps 127.0.0.0/16"},
		{netip.MustParsePrefix("127.250.3.0/25"), "fewer than 256 addresses"},
		{netip.MustParsePrefix("::1/128"), "is not an IPv4 prefix"},
		{netip.Prefix{}, "is not an IPv4 prefix"},
	}
	for _, tc := range tests {
		err := CheckPrefix(tc.prefix)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckPrefix(%s) = %v", tc.prefix, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckPrefix(%s) = %v, want %q", tc.prefix, err, tc.want)
		}
		// New applies the same rule, as ErrPrefix.
		if _, nerr := New(tc.prefix); (nerr == nil) != (err == nil) || (nerr != nil && (!errors.Is(nerr, ErrPrefix) || !strings.HasSuffix(nerr.Error(), err.Error()))) {
			t.Errorf("New(%s) = %v, CheckPrefix = %v", tc.prefix, nerr, err)
		}
	}
}
