package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Well-formed keys other than testKey and testServerKey, for the tests only.
const (
	testNewKey  = "bmV3a2V5bmV3a2V5bmV3a2V5bmV3a2V5bmV3a2V5bmU="
	testNewKey2 = "dHdvdHdvdHdvdHdvdHdvdHdvdHdvdHdvdHdvdHdvdHc="
)

func TestAcceptKeys(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	server := "server: true\nbootstrap_expect: 3\nserver_key: " + testServerKey + "\n"
	list := func(field string, keys ...string) string {
		return field + ": [" + strings.Join(keys, ", ") + "]\n"
	}
	five := []string{testNewKey, testNewKey2, "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=", "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=", "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM="}
	tests := []struct {
		name string
		body string
		want string // "" means valid
	}{
		{"one new key", list("accept_cluster_keys", testNewKey), ""},
		{"the old key after the switch", "cluster_key: " + testNewKey + "\n" + list("accept_cluster_keys", testKey), ""},
		{"four", list("accept_cluster_keys", five[:4]...), ""},
		{"five", list("accept_cluster_keys", five...), "accept_cluster_keys: lists 5 keys, at most 4"},
		{"not base64", list("accept_cluster_keys", testNewKey, "not-base64-at-all!"), "accept_cluster_keys[1]: is not valid base64"},
		{"19 bytes", list("accept_cluster_keys", "c2VydmVyc2VydmVyc2VydmVyAA=="), "accept_cluster_keys[0]: decodes to 19 bytes, want 32"},
		{"the key in use", list("accept_cluster_keys", testKey), "accept_cluster_keys[0]: is the key in use as cluster_key"},
		{"twice", list("accept_cluster_keys", testNewKey, testNewKey2, testNewKey), "accept_cluster_keys[2]: is the same key as accept_cluster_keys[0]"},
		{"the server key", server + list("accept_cluster_keys", testServerKey), "accept_cluster_keys[0]: is the key in use as server_key"},
		{"server keys on a server", server + list("accept_server_keys", testNewKey), ""},
		{"server keys on a client", list("accept_server_keys", testNewKey), "accept_server_keys: is only for servers with server_key"},
		{"server keys without server_key", "server: true\nbootstrap_expect: 3\n" + list("accept_server_keys", testNewKey), "accept_server_keys: is only for servers with server_key"},
		{"a server key that is a cluster key", server + list("accept_cluster_keys", testNewKey) + list("accept_server_keys", testNewKey), "accept_server_keys[0]: is the same key as accept_cluster_keys[0]"},
		{"the server key in use", server + list("accept_server_keys", testServerKey), "accept_server_keys[0]: is the key in use as server_key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := loadCase(t, dir, base, tc.body, tc.want)
			if err != nil {
				for _, secret := range append([]string{testKey, testServerKey, "not-base64-at-all!", "c2VydmVyc2VydmVyc2VydmVyAA=="}, five...) {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("an error repeats a key: %v", err)
					}
				}
				if !strings.Contains(err.Error(), filepath.Join(dir, "10-case.yaml")) {
					t.Errorf("error %q does not name the file that set the key", err)
				}
				return
			}
			if strings.Contains(tc.body, "accept_cluster_keys") && len(l.AcceptClusterKeys) == 0 {
				t.Errorf("accept_cluster_keys not loaded: %v", l.AcceptClusterKeys)
			}
		})
	}
}

// TestAcceptKeysSecretFile: a config file that sets accept_cluster_keys is
// a secret file, as one that sets cluster_key is.
func TestAcceptKeysSecretFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "rotate.yaml")
	if err := os.WriteFile(f, []byte("accept_cluster_keys: ["+testNewKey+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Load([]string{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := l.SecretWarnings()
	if len(ws) != 1 || !strings.Contains(ws[0], "holds accept_cluster_keys, but its mode 0644") {
		t.Fatalf("warnings %q, want one for accept_cluster_keys", ws)
	}
}
