package keytls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func mustAuthority(t *testing.T, key []byte, node string) *Authority {
	t.Helper()
	a, err := New(Config{Key: key, NodeName: node})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseKey(t *testing.T) {
	k := GenerateKey()
	b, err := ParseKey(k)
	if err != nil || len(b) != KeySize {
		t.Fatalf("ParseKey(GenerateKey()) = %d bytes, %v", len(b), err)
	}
	for _, bad := range []string{"", "not base64!", "c2hvcnQ=", strings.Repeat("A", 60)} {
		if _, err := ParseKey(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseKey(%q) = %v, want ErrBadKey", bad, err)
		}
	}
}

func TestSameKeySameCA(t *testing.T) {
	key, _ := ParseKey(GenerateKey())
	a := mustAuthority(t, key, "a")
	b := mustAuthority(t, key, "b")
	if !bytes.Equal(a.CACert().Raw, b.CACert().Raw) {
		t.Fatal("two agents with one key derived different CA certificates")
	}
	other, _ := ParseKey(GenerateKey())
	if bytes.Equal(a.CACert().Raw, mustAuthority(t, other, "c").CACert().Raw) {
		t.Fatal("two keys derived the same CA")
	}
}

// handshake runs one TLS handshake over loopback TCP and returns both errors
// and the negotiated protocol.
func handshake(t *testing.T, srv, cli *tls.Config) (serverErr, clientErr error, proto string) {
	t.Helper()
	r := connect(t, srv, cli)
	return r.serverErr, r.clientErr, r.proto
}

// connection is what both ends of one handshake saw.
type connection struct {
	serverErr, clientErr error
	proto                string
	// serverSaw and clientSaw are the leaves each end was presented.
	serverSaw, clientSaw *x509.Certificate
	resumed              bool
}

// connect runs one TLS handshake over loopback TCP, and one exchange so
// that the client learns of a refused certificate.
func connect(t *testing.T, srv, cli *tls.Config) connection {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var r connection
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, srv)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		err = tc.Handshake()
		if err == nil {
			if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
				r.serverSaw = pc[0]
			}
			_, err = io.WriteString(tc, "ok")
		}
		done <- err
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cli)
	if err == nil {
		// TLS 1.3: the client learns of a refused certificate on first read.
		buf := make([]byte, 2)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadFull(c, buf)
		cs := c.ConnectionState()
		r.proto, r.resumed = cs.NegotiatedProtocol, cs.DidResume
		if len(cs.PeerCertificates) > 0 {
			r.clientSaw = cs.PeerCertificates[0]
		}
		c.Close()
	}
	r.clientErr = err
	r.serverErr = <-done
	return r
}

func TestHandshake(t *testing.T) {
	key, _ := ParseKey(GenerateKey())
	wrong, _ := ParseKey(GenerateKey())
	a := mustAuthority(t, key, "a")
	b := mustAuthority(t, key, "b")
	x := mustAuthority(t, wrong, "x")

	tests := []struct {
		name     string
		srv, cli *Authority
		ok       bool
	}{
		{"same key", a, b, true},
		{"client has the wrong key", a, x, false},
		{"server has the wrong key", x, b, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			se, ce, proto := handshake(t, tc.srv.ServerConfig("p/1", "q/1"), tc.cli.ClientConfig("q/1"))
			if tc.ok {
				if se != nil || ce != nil {
					t.Fatalf("handshake failed: server %v, client %v", se, ce)
				}
				if proto != "q/1" {
					t.Fatalf("ALPN = %q, want q/1", proto)
				}
				return
			}
			if se == nil && ce == nil {
				t.Fatal("a peer with the wrong cluster key completed a handshake")
			}
		})
	}
}

func TestWrongKeyErrorNamesTrust(t *testing.T) {
	key, _ := ParseKey(GenerateKey())
	wrong, _ := ParseKey(GenerateKey())
	a := mustAuthority(t, key, "a")
	x := mustAuthority(t, wrong, "intruder")

	// a dials the intruder: a refuses the server's chain.
	_, ce, _ := handshake(t, x.ServerConfig("p"), a.ClientConfig("p"))
	if !errors.Is(ce, ErrUntrusted) {
		t.Fatalf("client error = %v, want ErrUntrusted", ce)
	}
	// The intruder dials a, trusting anything itself: a refuses its chain.
	loose := x.ClientConfig("p")
	loose.VerifyPeerCertificate = nil
	se, _, _ := handshake(t, a.ServerConfig("p"), loose)
	if !errors.Is(se, ErrUntrusted) || !strings.Contains(se.Error(), `"intruder"`) {
		t.Fatalf("server error = %v, want ErrUntrusted naming the peer", se)
	}
}

func TestPluggableTrustAndCertificate(t *testing.T) {
	key, _ := ParseKey(GenerateKey())
	other, _ := ParseKey(GenerateKey())
	a := mustAuthority(t, key, "a")
	mesh := mustAuthority(t, other, "mesh-node") // stands in for a mesh CA

	// b presents a leaf of the other CA: refused until a trusts that CA.
	b := mustAuthority(t, key, "b")
	b.SetCertificate(mesh.Certificate)
	if se, ce, _ := handshake(t, a.ServerConfig("p"), b.ClientConfig("p")); se == nil && ce == nil {
		t.Fatal("a leaf of an untrusted CA was accepted")
	}
	pool := x509.NewCertPool()
	pool.AddCert(mesh.CACert())
	a.AddTrust(TrustFunc(func() *x509.CertPool { return pool }))
	if se, ce, _ := handshake(t, a.ServerConfig("p"), b.ClientConfig("p")); se != nil || ce != nil {
		t.Fatalf("a leaf of an added trust source was refused: %v / %v", se, ce)
	}
	// Back to the cluster-key leaf.
	b.SetCertificate(nil)
	c, err := b.Certificate()
	if err != nil || c.Leaf.Subject.CommonName != "b" {
		t.Fatalf("Certificate after reset = %v, %v", c, err)
	}
}

func TestLeafRenewal(t *testing.T) {
	key, _ := ParseKey(GenerateKey())
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, err := New(Config{Key: key, NodeName: "a", LeafTTL: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := a.Certificate()
	now = now.Add(30 * time.Minute)
	if same, _ := a.Certificate(); same != first {
		t.Fatal("leaf renewed before two thirds of its life")
	}
	now = now.Add(11 * time.Minute)
	renewed, _ := a.Certificate()
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatal("leaf not renewed after two thirds of its life")
	}
}

func TestConfigValidate(t *testing.T) {
	key, _ := ParseKey(GenerateKey())
	tests := map[string]Config{
		"short key":                 {Key: key[:10], NodeName: "a"},
		"no node":                   {Key: key},
		"tiny ttl":                  {Key: key, NodeName: "a", LeafTTL: time.Second},
		"short server key":          {Key: key, ServerKey: key[:31], NodeName: "a"},
		"server key is cluster key": {Key: key, ServerKey: bytes.Clone(key), NodeName: "a"},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := New(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if k1, _ := DeriveKey(key, "x", 32); k1 == nil {
		t.Fatal("DeriveKey failed")
	}
}

// keys returns a fresh cluster key and server key.
func keys(t *testing.T) (cluster, server []byte) {
	t.Helper()
	cluster, err := ParseKey(GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ParseKey(GenerateKey()); err != nil {
		t.Fatal(err)
	}
	return cluster, server
}

func mustServer(t *testing.T, key, serverKey []byte, node string) *Authority {
	t.Helper()
	a, err := New(Config{Key: key, ServerKey: serverKey, NodeName: node})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestServerAuthorityDerivation(t *testing.T) {
	key, serverKey := keys(t)
	s1 := mustServer(t, key, serverKey, "s1")
	s2 := mustServer(t, key, serverKey, "s2")
	agent := mustAuthority(t, key, "c1")
	if !bytes.Equal(s1.ServerCACert().Raw, s2.ServerCACert().Raw) {
		t.Fatal("two servers with one server key derived different server authorities")
	}
	if !bytes.Equal(s1.CACert().Raw, agent.CACert().Raw) {
		t.Fatal("a server key changed the cluster authority")
	}
	if bytes.Equal(s1.ServerCACert().RawSubjectPublicKeyInfo, s1.CACert().RawSubjectPublicKeyInfo) {
		t.Fatal("the server authority is the cluster authority")
	}
	if agent.HasServerKey() || agent.ServerCACert() != nil {
		t.Fatal("an authority without a server key has a server authority")
	}
	if _, err := agent.ServerCertificate(); !errors.Is(err, ErrNoServerKey) {
		t.Fatalf("server leaf without a server key: %v, want ErrNoServerKey", err)
	}
	// The server authority's derivation run on the cluster key gives
	// another authority: it needs the server key itself.
	forged, err := deriveIssuer(serverSeed(key, key), "Meshwork server CA ")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(forged.cert.RawSubjectPublicKeyInfo, s1.ServerCACert().RawSubjectPublicKeyInfo) {
		t.Fatal("the server authority follows from the cluster key")
	}
	// Bound to the cluster: the same server key with another cluster key
	// is another server authority.
	otherCluster, _ := keys(t)
	if bytes.Equal(mustServer(t, otherCluster, serverKey, "s9").ServerCACert().Raw, s1.ServerCACert().Raw) {
		t.Fatal("a server of another cluster key derived this cluster's server authority")
	}
	leaf, err := s1.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Leaf.Subject.CommonName != "s1" || leaf.Leaf.CheckSignatureFrom(s2.ServerCACert()) != nil {
		t.Fatalf("server leaf %q does not verify under the server authority", leaf.Leaf.Subject.CommonName)
	}
	if again, _ := s1.ServerCertificate(); again != leaf {
		t.Fatal("the server leaf was minted again before two thirds of its life")
	}
}

// TestPeerConnections: between servers (Raft), only server leaves are
// accepted, in both directions, whatever name a cluster-key leaf carries.
func TestPeerConnections(t *testing.T) {
	key, serverKey := keys(t)
	_, otherServerKey := keys(t)
	s1 := mustServer(t, key, serverKey, "s1")
	s2 := mustServer(t, key, serverKey, "s2")
	impostor := mustAuthority(t, key, "s2") // a cluster-key leaf under a server's name
	stranger := mustServer(t, key, otherServerKey, "s3")

	t.Run("server to server", func(t *testing.T) {
		r := connect(t, s1.PeerServerConfig("raft/1"), s2.PeerClientConfig("raft/1"))
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("handshake failed: server %v, client %v", r.serverErr, r.clientErr)
		}
		if !s1.IsServerLeaf(r.serverSaw) || !s2.IsServerLeaf(r.clientSaw) {
			t.Fatal("a server's leaf is not a server leaf to another server")
		}
	})
	// The impostor trusts whatever the server presents: the server must
	// refuse it on its own.
	loose := func(c *tls.Config) *tls.Config {
		c.VerifyPeerCertificate = nil
		return c
	}
	t.Run("cluster-key leaf dials a server", func(t *testing.T) {
		for name, cli := range map[string]*tls.Config{"as an agent": loose(impostor.ClientConfig("raft/1")), "as a Raft peer": loose(impostor.PeerClientConfig("raft/1"))} {
			r := connect(t, s1.PeerServerConfig("raft/1"), cli)
			if !errors.Is(r.serverErr, ErrNotServer) || !errors.Is(r.serverErr, ErrUntrusted) || !strings.Contains(r.serverErr.Error(), `"s2"`) {
				t.Fatalf("%s: server error = %v, want ErrNotServer naming s2", name, r.serverErr)
			}
			if r.clientErr == nil {
				t.Fatalf("%s: the impostor's connection works", name)
			}
		}
	})
	t.Run("a server dials a cluster-key leaf", func(t *testing.T) {
		r := connect(t, impostor.PeerServerConfig("raft/1"), s1.PeerClientConfig("raft/1"))
		if !errors.Is(r.clientErr, ErrNotServer) {
			t.Fatalf("client error = %v, want ErrNotServer", r.clientErr)
		}
	})
	t.Run("another server key", func(t *testing.T) {
		if r := connect(t, s1.PeerServerConfig("raft/1"), loose(stranger.PeerClientConfig("raft/1"))); !errors.Is(r.serverErr, ErrNotServer) {
			t.Fatalf("server error = %v, want ErrNotServer", r.serverErr)
		}
	})
	t.Run("without a server key", func(t *testing.T) {
		// As before the server key: any holder of the cluster key.
		a, b := mustAuthority(t, key, "a"), mustAuthority(t, key, "b")
		r := connect(t, a.PeerServerConfig("raft/1"), b.PeerClientConfig("raft/1"))
		if r.serverErr != nil || r.clientErr != nil || !a.IsServerLeaf(r.serverSaw) {
			t.Fatalf("handshake: server %v, client %v; server leaf %v", r.serverErr, r.clientErr, r.serverSaw != nil && a.IsServerLeaf(r.serverSaw))
		}
	})
}

// TestAgentConnections: on the port every agent uses (RPC), agents keep
// their cluster-key leaves and are not servers; a server presents its
// server leaf to a server with the key, and its cluster-key leaf to one
// without (a rolling restart).
func TestAgentConnections(t *testing.T) {
	key, serverKey := keys(t)
	s1 := mustServer(t, key, serverKey, "s1")
	s2 := mustServer(t, key, serverKey, "s2")
	impostor := mustAuthority(t, key, "s2")
	old := mustAuthority(t, key, "s3") // a server not yet restarted with the key

	tests := []struct {
		name       string
		srv        *Authority
		cli        *Authority
		wantServer bool
	}{
		{"server to server", s1, s2, true},
		{"an agent's cluster-key leaf under a server's name", s1, impostor, false},
		{"a server to one without the key", old, s2, true}, // it counts every cluster-key leaf
		{"a server without the key to one with it", s1, old, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := connect(t, tc.srv.ServerConfig("rpc/1"), tc.cli.ClientConfig("rpc/1"))
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("handshake failed: server %v, client %v", r.serverErr, r.clientErr)
			}
			if got := tc.srv.IsServerLeaf(r.serverSaw); got != tc.wantServer {
				t.Fatalf("caller %q counts as a server: %v, want %v", r.serverSaw.Subject.CommonName, got, tc.wantServer)
			}
			// Agents cannot verify a server leaf: on this port every
			// server presents its cluster-key leaf.
			if r.clientSaw.CheckSignatureFrom(tc.srv.CACert()) != nil {
				t.Fatalf("the server presented %q, not its cluster-key leaf", r.clientSaw.Issuer.CommonName)
			}
		})
	}
	// The server leaf goes only where it is asked for: a server without
	// the key was given the cluster-key leaf.
	r := connect(t, old.ServerConfig("rpc/1"), s2.ClientConfig("rpc/1"))
	if r.serverSaw == nil || r.serverSaw.CheckSignatureFrom(s2.ServerCACert()) == nil {
		t.Fatal("a server presented its server leaf to a server that cannot verify it")
	}
}

// TestNoResumption: a session is never resumed, so that no connection
// skips the verification of its own config.
func TestNoResumption(t *testing.T) {
	key, serverKey := keys(t)
	s1 := mustServer(t, key, serverKey, "s1")
	agent := mustAuthority(t, key, "c1")
	cli := agent.ClientConfig("rpc/1")
	cli.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		r := connect(t, s1.ServerConfig("rpc/1"), cli)
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("handshake %d: server %v, client %v", i, r.serverErr, r.clientErr)
		}
		if r.resumed {
			t.Fatalf("handshake %d resumed a session", i)
		}
	}
}

// TestRequestNamesBothAuthorities: a server with the server key names both
// derived authorities in its certificate request, so that a client that
// picks from a fixed list of certificates still sends its cluster-key leaf.
func TestRequestNamesBothAuthorities(t *testing.T) {
	key, serverKey := keys(t)
	s1 := mustServer(t, key, serverKey, "s1")
	leaf, err := mustAuthority(t, key, "c1").Certificate()
	if err != nil {
		t.Fatal(err)
	}
	cli := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"rpc/1"}, Certificates: []tls.Certificate{*leaf}, InsecureSkipVerify: true}
	r := connect(t, s1.ServerConfig("rpc/1"), cli)
	if r.serverErr != nil || r.clientErr != nil || r.serverSaw == nil || r.serverSaw.Subject.CommonName != "c1" {
		t.Fatalf("a fixed cluster-key leaf: server %v, client %v", r.serverErr, r.clientErr)
	}
}
