package suggest

import (
	"strings"
	"testing"
)

func TestClosest(t *testing.T) {
	names := []string{"port", "ports", "protocol", "write", "read"}
	tests := []struct {
		key, want string
	}{
		{"prot", "port"},        // one edit from port, two from ports
		{"wirte", "write"},      // two edits
		{"Port", "port"},        // case is ignored
		{"port", ""},            // a known name is no typo
		{"xyzzy", ""},           // nothing close
		{"reed", "read"},        // one edit
		{"protocl", "protocol"}, // one edit
		{strings.Repeat("p", 100), ""},
	}
	for _, tc := range tests {
		if got := Closest(tc.key, names); got != tc.want {
			t.Errorf("Closest(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestClosestTieIsSorted(t *testing.T) {
	// "cat" is one edit from both; the first in sorted order wins, whatever
	// the order given.
	for _, names := range [][]string{{"bat", "car"}, {"car", "bat"}} {
		if got := Closest("cat", names); got != "bat" {
			t.Errorf("Closest(cat, %v) = %q, want bat", names, got)
		}
	}
}

func TestHint(t *testing.T) {
	if got := Hint("wirte", []string{"read", "write"}); got != ` (did you mean "write"?)` {
		t.Errorf("Hint = %q", got)
	}
	if got := Hint("zzz", []string{"read"}); got != "" {
		t.Errorf("Hint = %q, want none", got)
	}
}

func TestDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"flaw", "lawn", 2},
	}
	for _, tc := range tests {
		if got := Distance(tc.a, tc.b); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
