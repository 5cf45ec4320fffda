package spiffeid

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	if got := Node("mesh.test", "n1"); got != "spiffe://mesh.test/node/n1" {
		t.Errorf("Node = %q", got)
	}
	if got := Service("mesh.test", "web"); got != "spiffe://mesh.test/svc/web" {
		t.Errorf("Service = %q", got)
	}
	id := ID{TrustDomain: "mesh.test", Kind: KindService, Name: "web"}
	if got := id.URL().String(); got != id.String() {
		t.Errorf("URL() = %q, String() = %q", got, id.String())
	}
}

func TestParse(t *testing.T) {
	long := strings.Repeat("a", MaxNameLen)
	tests := []struct {
		name string
		td   string
		in   string
		want ID
		err  error
	}{
		{"service", "td", "spiffe://td/svc/web", ID{"td", KindService, "web"}, nil},
		{"node", "td", "spiffe://td/node/n-1.a_b", ID{"td", KindNode, "n-1.a_b"}, nil},
		{"longest name", "td", "spiffe://td/svc/" + long, ID{"td", KindService, long}, nil},
		{"upper-case name", "td", "spiffe://td/svc/Web", ID{"td", KindService, "Web"}, nil},
		{"other trust domain", "td", "spiffe://other/svc/web", ID{}, ErrForeign},
		{"trust domain prefix", "td", "spiffe://tdx/svc/web", ID{}, ErrForeign},
		{"other scheme", "td", "https://td/svc/web", ID{}, ErrForeign},
		{"empty", "td", "", ID{}, ErrForeign},
		{"no path", "td", "spiffe://td", ID{}, ErrInvalid},
		{"no name", "td", "spiffe://td/svc/", ID{}, ErrInvalid},
		{"two segments", "td", "spiffe://td/svc/a/b", ID{}, ErrInvalid},
		{"unknown kind", "td", "spiffe://td/user/x", ID{}, ErrInvalid},
		{"dot-dot", "td", "spiffe://td/node/..", ID{}, ErrInvalid},
		{"percent", "td", "spiffe://td/svc/w%65b", ID{}, ErrInvalid},
		{"query", "td", "spiffe://td/svc/web?x", ID{}, ErrInvalid},
		{"name too long", "td", "spiffe://td/svc/" + long + "a", ID{}, ErrInvalid},
		{"bad trust domain", "TD", "spiffe://TD/svc/web", ID{}, ErrInvalid},
		{"port", "td", "spiffe://td:1/svc/web", ID{}, ErrForeign},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.td, tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Parse(%q) = %v, want %v", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in {
				t.Fatalf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

func TestFromURL(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want ID
		err  error
	}{
		{"node", "spiffe://mesh.test/node/n1", ID{"mesh.test", KindNode, "n1"}, nil},
		{"service", "spiffe://mesh.test/svc/web", ID{"mesh.test", KindService, "web"}, nil},
		{"https", "https://mesh.test/node/n1", ID{}, ErrForeign},
		{"other trust domain", "spiffe://other.test/node/n1", ID{}, ErrForeign},
		{"user", "spiffe://u@mesh.test/node/n1", ID{}, ErrInvalid},
		{"port", "spiffe://mesh.test:8/node/n1", ID{}, ErrForeign},
		{"query", "spiffe://mesh.test/node/n1?a=b", ID{}, ErrInvalid},
		{"fragment", "spiffe://mesh.test/node/n1#f", ID{}, ErrInvalid},
		{"root only", "spiffe://mesh.test", ID{}, ErrInvalid},
		{"slash in name", "spiffe://mesh.test/svc/a%2Fb", ID{}, ErrInvalid},
		{"unknown kind", "spiffe://mesh.test/ns/x", ID{}, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := FromURL("mesh.test", u)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("FromURL(%q) = %v, want %v", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FromURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"trust domain ok", ValidateTrustDomain("mesh-1.example_x"), ""},
		{"trust domain empty", ValidateTrustDomain(""), `trust domain "": want 1 to 255 characters`},
		{"trust domain upper", ValidateTrustDomain("Mesh"), `trust domain "Mesh": character 'M' not allowed (lowercase letters, digits, '.', '-', '_')`},
		{"trust domain too long", ValidateTrustDomain(strings.Repeat("a", 256)), "want 1 to 255 characters"},
		{"name ok", ValidateName("service", "Web-1.x_y"), ""},
		{"name empty", ValidateName("node", ""), `node name "": want 1 to 128 characters`},
		{"name dot", ValidateName("node", "."), `node name "." is not allowed`},
		{"name slash", ValidateName("service", "a/b"), `service name "a/b": character '/' not allowed (letters, digits, '.', '-', '_')`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == "" {
				if tc.err != nil {
					t.Fatalf("unexpected error %v", tc.err)
				}
				return
			}
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) || !errors.Is(tc.err, ErrInvalid) {
				t.Fatalf("error %v, want %q wrapping ErrInvalid", tc.err, tc.want)
			}
		})
	}
}

// The hot path (the source of every tunnel stream) parses without
// allocating.
func TestParseAllocs(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Parse("mesh.test", "spiffe://mesh.test/svc/web"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Parse allocates %v times", allocs)
	}
}

// FuzzParse: whatever Parse accepts spells itself back byte for byte, is
// accepted by FromURL once parsed as a URL, and has a valid name.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"spiffe://mesh.test/node/n1",
		"spiffe://mesh.test/svc/web",
		"spiffe://mesh.test/svc/a/b",
		"spiffe://mesh.test/svc/%2e%2e",
		"spiffe://mesh.test:80/svc/web",
		"spiffe://u@mesh.test/svc/web",
		"spiffe://mesh.test/svc/web?q#f",
		"spiffe://MESH/svc/..",
		"https://mesh.test/svc/web",
		"spiffe://mesh.test",
		"",
	} {
		f.Add("mesh.test", s)
	}
	f.Fuzz(func(t *testing.T, td, s string) {
		id, err := Parse(td, s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrForeign) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, id.String())
		}
		if id.TrustDomain != td || ValidateTrustDomain(td) != nil || ValidateName("x", id.Name) != nil {
			t.Fatalf("accepted %q as %+v", s, id)
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("accepted %q, which is not a URL: %v", s, err)
		}
		if back, err := FromURL(td, u); err != nil || back != id {
			t.Fatalf("FromURL(%q) = %+v, %v; Parse gave %+v", s, back, err, id)
		}
	})
}
