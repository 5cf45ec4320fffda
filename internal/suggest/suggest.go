// Package suggest finds the known name that a misspelt one was meant to be,
// for the did-you-mean hints of every strict parser: the agent's
// configuration, policy documents and ACL rules.
package suggest

import (
	"fmt"
	"strings"
)

// maxDistance is the most edits a typo may be away from the name it means.
const maxDistance = 2

// Closest returns the name among names that key is a typo of: within two
// edits, ignoring case, the nearest (the first in sorted order among equals).
// It returns "" when none is that close, or when key is one of names.
func Closest(key string, names []string) string {
	lk := strings.ToLower(key)
	best, bestD := "", maxDistance+1
	for _, n := range names {
		if n == key {
			return ""
		}
		d := Distance(lk, strings.ToLower(n))
		if d < bestD || (d == bestD && n < best) {
			best, bestD = n, d
		}
	}
	return best
}

// Hint is ` (did you mean "name"?)` for the name key is a typo of, or "".
func Hint(key string, names []string) string {
	if c := Closest(key, names); c != "" {
		return fmt.Sprintf(" (did you mean %q?)", c)
	}
	return ""
}

// Distance is the Levenshtein distance between a and b. Inputs longer than
// 64 bytes are never typos of a name, and are far from everything.
func Distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
