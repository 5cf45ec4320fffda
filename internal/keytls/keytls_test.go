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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
		proto = c.ConnectionState().NegotiatedProtocol
		c.Close()
	}
	return <-done, err, proto
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
		"short key": {Key: key[:10], NodeName: "a"},
		"no node":   {Key: key},
		"tiny ttl":  {Key: key, NodeName: "a", LeafTTL: time.Second},
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
