package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestCheckCaps(t *testing.T) {
	const n, b = MaxTotalDocuments, MaxTotalBytes
	for _, tc := range []struct {
		name                        string
		count, size, after, newSize int64
		cap                         string // "" when allowed
	}{
		{"growth under the caps", 10, 1000, 11, 1200, ""},
		{"up to the document cap", n - 1, 1000, n, 1100, ""},
		{"past the document cap", n, 1000, n + 1, 1100, CapDocuments},
		{"a write of many documents past it", 100, 1000, n + 100, 5000, CapDocuments},
		{"up to the size cap", 10, b - 10, 10, b, ""},
		{"past the size cap", 10, b - 10, 10, b + 1, CapBytes},
		{"over both: the count is named", n, b, n + 1, b + 1, CapDocuments},
		{"an older set over the caps shrinks", n + 500, b + 500, n + 499, b + 100, ""},
		{"an older set over the caps is rewritten, same figures", n + 500, b + 500, n + 500, b + 500, ""},
		{"an older set over the count grows in size under its cap", n + 500, 1000, n + 500, 2000, ""},
		{"an older set over the count grows in count", n + 500, 1000, n + 501, 1000, CapDocuments},
		{"an older set over the size grows in size", 10, b + 500, 10, b + 501, CapBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckCaps(tc.count, tc.size, tc.after, tc.newSize)
			if tc.cap == "" {
				if err != nil {
					t.Fatalf("CheckCaps = %v, want nil", err)
				}
				return
			}
			var ce *CapError
			if !errors.Is(err, ErrCapExceeded) || !errors.As(err, &ce) {
				t.Fatalf("CheckCaps = %v, want a *CapError", err)
			}
			if ce.Cap != tc.cap {
				t.Fatalf("cap %q, want %q", ce.Cap, tc.cap)
			}
			cur, after := tc.count, tc.after
			if tc.cap == CapBytes {
				cur, after = tc.size, tc.newSize
			}
			if ce.Current != cur || ce.After != after {
				t.Fatalf("figures %d -> %d, want %d -> %d", ce.Current, ce.After, cur, after)
			}
		})
	}
}

func TestCapErrorNamesCapAndFigures(t *testing.T) {
	err := CheckCaps(MaxTotalDocuments, 100, MaxTotalDocuments+2, 120)
	want := "policy cap exceeded: documents: the policy holds 5000 and this write would make it 5002, over the cap of 5000"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want it to start %q", err, want)
	}
	err = CheckCaps(10, MaxTotalBytes, 10, MaxTotalBytes+7)
	want = "policy cap exceeded: total size: the policy holds 1048576 bytes and this write would make it 1048583 bytes, over the cap of 1048576 bytes"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want it to start %q", err, want)
	}
}

func TestEncodedSizeIsTheJSON(t *testing.T) {
	// The description holds characters json.Marshal escapes.
	docs, err := Parse([]byte("kind: Intention\nname: web\nsources: [{name: api, action: allow, description: \"<a & b> é\"}, {name: \"*\", action: deny}]\n---\nkind: ServiceDefaults\nname: db\nprotocol: tcp\n" +
		"---\nkind: Intention\nname: api\nsources: [{name: web, permissions: [{action: allow, http: {path_exact: \"/a&b\", methods: [GET], headers: [{name: x, exact: \"<1>\"}]}}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range docs {
		b, err := json.Marshal(docs[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := EncodedSize(&docs[i]); got != int64(len(b)) || got == 0 {
			t.Fatalf("%s: EncodedSize %d, JSON %d bytes", docs[i].Key(), got, len(b))
		}
	}
	// Permissions count: a source with its permissions weighs more than
	// the same source with an action.
	plain := Document{Kind: KindIntention, Name: "api", Spec: &Intention{Sources: []IntentionSource{{Name: "web", Action: Allow}}}}
	if EncodedSize(&docs[2]) <= EncodedSize(&plain) {
		t.Fatalf("permissions not counted: %d bytes with them, %d without", EncodedSize(&docs[2]), EncodedSize(&plain))
	}
}
