package raftstore

import (
	"bytes"
	"strings"
	"testing"
)

func TestConfigChecks(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	other := bytes.Repeat([]byte{2}, 32)
	secret := "mwt_" + strings.Repeat("A", 43)
	tests := []struct {
		name string
		err  error
		want string // "" means valid
	}{
		{"expect 0 on a client", CheckBootstrapExpect(false, 0), ""},
		{"expect 3 on a server", CheckBootstrapExpect(true, 3), ""},
		{"expect on a client", CheckBootstrapExpect(false, 3), "3 is for servers only"},
		{"even expect", CheckBootstrapExpect(true, 2), "2 must be 1, 3 or 5"},
		{"negative expect", CheckBootstrapExpect(true, -1), "-1 must be 1, 3 or 5"},
		{"no server key", CheckServerKey(false, nil, key), ""},
		{"server key on a server", CheckServerKey(true, other, key), ""},
		{"server key on a client", CheckServerKey(false, other, key), "is only for servers"},
		{"short server key", CheckServerKey(true, other[:19], key), "is 19 bytes, want 32"},
		{"server key is the cluster key", CheckServerKey(true, key, key), "is the same key as cluster_key"},
		{"no initial management", CheckInitialManagement(false, ""), ""},
		{"initial management on a server", CheckInitialManagement(true, secret), ""},
		{"initial management on a client", CheckInitialManagement(false, secret), "is only for servers"},
		{"malformed initial management", CheckInitialManagement(true, "mwt_short"), "the value is 9 characters long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.want == "" && tc.err != nil:
				t.Fatalf("refused: %v", tc.err)
			case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", tc.err, tc.want)
			case tc.err != nil && strings.Contains(tc.err.Error(), "mwt_short"):
				t.Fatalf("the error repeats the secret: %v", tc.err)
			}
		})
	}
}

// TestValidateUsesTheChecks: Config.Validate refuses with the words of the
// check, under the field's name.
func TestValidateUsesTheChecks(t *testing.T) {
	c := Config{NodeName: "n", DataDir: t.TempDir(), ClusterKey: bytes.Repeat([]byte{1}, 32), Server: true, BootstrapExpect: 4, BindAddr: "127.0.0.1:0"}
	want := "raftstore: config: BootstrapExpect " + CheckBootstrapExpect(true, 4).Error()
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Fatalf("Validate = %v, want %q", err, want)
	}
	c = Config{NodeName: "n", DataDir: t.TempDir(), ClusterKey: []byte("short")}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "ClusterKey is 5 bytes, want 32") {
		t.Fatalf("Validate = %v, want a refusal of the short cluster key", err)
	}
}
