package keytls

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// rotation is one agent's keys at one phase of a cluster key rotation
// (docs/operations.md): the key it mints from and those it accepts.
type rotation struct {
	name   string
	key    []byte
	accept [][]byte
}

func (r rotation) authority(t *testing.T, node string, serverKey []byte) *Authority {
	t.Helper()
	a, err := New(Config{Key: r.key, AcceptKeys: r.accept, ServerKey: serverKey, NodeName: node})
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	return a
}

// TestClusterKeyRotation: an agent of each phase of the rotation connects
// with an agent of the same or the next phase, both ways, on the port
// every agent uses and, with server keys, between servers; agents two
// phases apart, each knowing one key only, are refused with
// ErrKeyMismatch naming both keys by fingerprint, never the keys.
func TestClusterKeyRotation(t *testing.T) {
	oldKey, serverKey := keys(t)
	newKey, _ := keys(t)
	phases := []rotation{
		{"0: old key", oldKey, nil},
		{"1: old key, accepts new", oldKey, [][]byte{newKey}},
		{"2: new key, accepts old", newKey, [][]byte{oldKey}},
		{"3: new key", newKey, nil},
	}
	for _, withServerKey := range []bool{false, true} {
		var sk []byte
		if withServerKey {
			sk = serverKey
		}
		t.Run(fmt.Sprintf("server key %v", withServerKey), func(t *testing.T) {
			for i, a := range phases {
				for j, b := range phases {
					if j < i || j > i+1 {
						continue
					}
					t.Run(a.name+" and "+b.name, func(t *testing.T) {
						x, y := a.authority(t, "x", sk), b.authority(t, "y", sk)
						for _, pair := range [][2]*Authority{{x, y}, {y, x}} {
							srv, cli := pair[0], pair[1]
							r := connect(t, srv.ServerConfig("rpc/1"), cli.ClientConfig("rpc/1"))
							if r.serverErr != nil || r.clientErr != nil {
								t.Fatalf("agents: server %v, client %v", r.serverErr, r.clientErr)
							}
							if withServerKey && !srv.IsServerLeaf(r.serverSaw) {
								t.Fatalf("%q is not a server to %q", r.serverSaw.Subject.CommonName, srv.cfg.NodeName)
							}
							if !srv.IsClusterLeaf(r.clientSaw) && !withServerKey {
								t.Fatalf("%q's leaf is not a cluster leaf", r.clientSaw.Subject.CommonName)
							}
							r = connect(t, srv.PeerServerConfig("raft/1"), cli.PeerClientConfig("raft/1"))
							if r.serverErr != nil || r.clientErr != nil {
								t.Fatalf("servers: server %v, client %v", r.serverErr, r.clientErr)
							}
						}
					})
				}
			}
			t.Run("old key only and new key only", func(t *testing.T) {
				old, nu := phases[0].authority(t, "old", sk), phases[3].authority(t, "new", sk)
				oldFP, newFP := old.Fingerprint(), nu.Fingerprint()
				for _, cfg := range []struct{ name, srv, cli string }{{"agents", "rpc/1", "rpc/1"}, {"servers", "raft/1", "raft/1"}} {
					srvCfg, cliCfg := old.ServerConfig(cfg.srv), nu.ClientConfig(cfg.cli)
					if cfg.name == "servers" {
						srvCfg, cliCfg = old.PeerServerConfig(cfg.srv), nu.PeerClientConfig(cfg.cli)
					}
					r := connect(t, srvCfg, cliCfg)
					// The client checks the server's leaf first, and
					// refuses it; the server hears of the refusal.
					if !errors.Is(r.clientErr, ErrKeyMismatch) || !errors.Is(r.clientErr, ErrUntrusted) {
						t.Fatalf("%s: client error %v, want ErrKeyMismatch", cfg.name, r.clientErr)
					}
					msg := r.clientErr.Error()
					if withServerKey && cfg.name == "servers" {
						// Between servers, the server authorities are
						// compared: each follows from both keys.
						if !strings.Contains(msg, "server authority") {
							t.Fatalf("%s: %v does not name the server authorities", cfg.name, msg)
						}
					} else if !strings.Contains(msg, oldFP) || !strings.Contains(msg, newFP) || !strings.Contains(msg, `"old"`) {
						t.Fatalf("%s: %q does not name both fingerprints and the peer", cfg.name, msg)
					}
					for _, k := range [][]byte{oldKey, newKey, serverKey} {
						for _, form := range []string{base64.StdEncoding.EncodeToString(k), hex.EncodeToString(k)} {
							if strings.Contains(msg, form) {
								t.Fatalf("%s: the error reveals a key: %q", cfg.name, msg)
							}
						}
					}
				}
				// And the other way: a client that trusts anything is
				// refused by the server's own check.
				loose := old.ClientConfig("rpc/1")
				loose.VerifyPeerCertificate = nil
				r := connect(t, nu.ServerConfig("rpc/1"), loose)
				if !errors.Is(r.serverErr, ErrKeyMismatch) || !strings.Contains(r.serverErr.Error(), oldFP) {
					t.Fatalf("server error %v, want ErrKeyMismatch naming %s", r.serverErr, oldFP)
				}
			})
		})
	}
}

// TestServerKeyRotation: servers whose server keys differ, each accepting
// the other's, are servers to each other; with neither accepting, they are
// refused as not servers with ErrKeyMismatch.
func TestServerKeyRotation(t *testing.T) {
	key, oldSK := keys(t)
	_, newSK := keys(t)
	s1, err := New(Config{Key: key, ServerKey: oldSK, AcceptServerKeys: [][]byte{newSK}, NodeName: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(Config{Key: key, ServerKey: newSK, AcceptServerKeys: [][]byte{oldSK}, NodeName: "s2"})
	if err != nil {
		t.Fatal(err)
	}
	r := connect(t, s1.PeerServerConfig("raft/1"), s2.PeerClientConfig("raft/1"))
	if r.serverErr != nil || r.clientErr != nil || !s1.IsServerLeaf(r.serverSaw) || !s2.IsServerLeaf(r.clientSaw) {
		t.Fatalf("servers of the two server keys: server %v, client %v", r.serverErr, r.clientErr)
	}
	r = connect(t, s1.ServerConfig("rpc/1"), s2.ClientConfig("rpc/1"))
	if r.serverErr != nil || r.clientErr != nil || !s1.IsServerLeaf(r.serverSaw) {
		t.Fatalf("an RPC between them: server %v, client %v; a server: %v", r.serverErr, r.clientErr, r.serverSaw != nil && s1.IsServerLeaf(r.serverSaw))
	}
	old, nu := mustServer(t, key, oldSK, "s3"), mustServer(t, key, newSK, "s4")
	r = connect(t, old.PeerServerConfig("raft/1"), nu.PeerClientConfig("raft/1"))
	if !errors.Is(r.clientErr, ErrKeyMismatch) || !errors.Is(r.clientErr, ErrNotServer) {
		t.Fatalf("servers of two server keys, neither accepting the other: %v", r.clientErr)
	}
}

func TestFingerprint(t *testing.T) {
	key, _ := keys(t)
	other, _ := keys(t)
	a, err := New(Config{Key: key, AcceptKeys: [][]byte{other}, NodeName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	fp, err := Fingerprint(key)
	if err != nil {
		t.Fatal(err)
	}
	ofp, _ := Fingerprint(other)
	if fp != a.Fingerprint() || len(fp) != 2*fingerprintLen || fp == ofp {
		t.Fatalf("Fingerprint(key) = %q, authority's %q, other key's %q", fp, a.Fingerprint(), ofp)
	}
	if got := a.AcceptedFingerprints(); len(got) != 1 || got[0] != ofp {
		t.Fatalf("accepted fingerprints %v, want [%s]", got, ofp)
	}
	// The authority's name carries it, for whoever reads a certificate.
	if !strings.HasSuffix(a.CACert().Subject.CommonName, fp[:8]) {
		t.Fatalf("CA %q does not carry fingerprint %s", a.CACert().Subject.CommonName, fp)
	}
	if _, err := Fingerprint(key[:5]); !errors.Is(err, ErrBadKey) {
		t.Fatalf("Fingerprint of a short key: %v", err)
	}
}

func TestAcceptKeysValidate(t *testing.T) {
	key, sk := keys(t)
	k1, k2 := mustKey(t), mustKey(t)
	many := [][]byte{mustKey(t), mustKey(t), mustKey(t), mustKey(t), mustKey(t)}
	tests := map[string]struct {
		cfg  Config
		want string
	}{
		"accept the cluster key":       {Config{Key: key, AcceptKeys: [][]byte{bytes.Clone(key)}}, "AcceptKeys[0]"},
		"accept the server key":        {Config{Key: key, ServerKey: sk, AcceptKeys: [][]byte{bytes.Clone(sk)}}, "AcceptKeys[0]"},
		"duplicate":                    {Config{Key: key, AcceptKeys: [][]byte{k1, k2, bytes.Clone(k1)}}, "AcceptKeys[2]"},
		"short":                        {Config{Key: key, AcceptKeys: [][]byte{k1[:16]}}, "AcceptKeys[0]"},
		"nil entry":                    {Config{Key: key, AcceptKeys: [][]byte{k1, nil}}, "AcceptKeys[1]: is 0 bytes, want 32"},
		"too many":                     {Config{Key: key, AcceptKeys: many}, "at most 4"},
		"accept server without one":    {Config{Key: key, AcceptServerKeys: [][]byte{k1}}, "only with ServerKey"},
		"accept server key = cluster":  {Config{Key: key, ServerKey: sk, AcceptServerKeys: [][]byte{bytes.Clone(key)}}, "AcceptServerKeys[0]"},
		"accept server key = accepted": {Config{Key: key, ServerKey: sk, AcceptKeys: [][]byte{k1}, AcceptServerKeys: [][]byte{bytes.Clone(k1)}}, "AcceptServerKeys[0]"},
		"accept server key = own":      {Config{Key: key, ServerKey: sk, AcceptServerKeys: [][]byte{bytes.Clone(sk)}}, "AcceptServerKeys[0]"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.cfg.NodeName = "a"
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{Key: key, ServerKey: sk, AcceptKeys: many[:4], AcceptServerKeys: [][]byte{k1, k2}, NodeName: "a"}); err != nil {
		t.Fatalf("four accepted keys and two accepted server keys: %v", err)
	}
}

// CheckAccepted reports every problem of a list, each by the entry's index
// (-1 for the list), and never repeats a key.
func TestCheckAccepted(t *testing.T) {
	key, sk := keys(t)
	k1, k2 := mustKey(t), mustKey(t)
	held := []Held{{Name: "cluster_key", Key: key, InUse: true}, {Name: "other[0]", Key: k2}}
	list := [][]byte{k1, nil, bytes.Clone(key), k1[:16], bytes.Clone(k1), bytes.Clone(k2)}
	errs := CheckAccepted("accept", list, held...)
	want := []struct {
		index int
		msg   string
	}{
		{-1, "lists 6 keys, at most 4"},
		{1, "is 0 bytes, want 32"},
		{2, "is the key in use as cluster_key"},
		{3, "is 16 bytes, want 32"},
		{4, "is the same key as accept[0]"},
		{5, "is the same key as other[0]"},
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(want))
	}
	for i, w := range want {
		e := errs[i]
		if e.Index != w.index || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("error %d = [%d] %s, want [%d] %s", i, e.Index, e.Msg, w.index, w.msg)
		}
		if (w.index == 1 || w.index == 3) != errors.Is(e, ErrBadKey) {
			t.Errorf("error %d: errors.Is(ErrBadKey) = %v", i, errors.Is(e, ErrBadKey))
		}
		for _, k := range [][]byte{key, sk, k1, k2} {
			for _, form := range []string{base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k), hex.EncodeToString(k)} {
				if strings.Contains(e.Msg, form) {
					t.Errorf("error %d repeats a key: %s", i, e.Msg)
				}
			}
		}
	}
	if errs := CheckAccepted("accept", [][]byte{k1, sk}, held...); len(errs) != 0 {
		t.Fatalf("a good list: %v", errs)
	}
	if _, err := New(Config{Key: key, AcceptKeys: [][]byte{k1[:16]}, NodeName: "a"}); !errors.Is(err, ErrBadKey) {
		t.Fatalf("New with a short accepted key = %v, want ErrBadKey", err)
	}
}

func mustKey(t *testing.T) []byte {
	t.Helper()
	k, err := ParseKey(GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}
