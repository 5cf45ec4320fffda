package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
)

// haproxyName is the name in the pair's certificate, which each end checks.
const haproxyName = "haproxy.bench.meshwork"

// writeHAProxyCert writes a self-signed ECDSA P-256 certificate (the mesh's
// kind of key) for both ends of the pair: cert.pem alone, the trust anchor,
// and pair.pem, the certificate with its key, as HAProxy's crt wants it.
func writeHAProxyCert(dir string) (certFile, pairFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: haproxyName},
		DNSNames:              []string{haproxyName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certFile, pairFile = filepath.Join(dir, "haproxy-cert.pem"), filepath.Join(dir, "haproxy-pair.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pairFile, append(certPEM, keyPEM...), 0o600); err != nil {
		return "", "", err
	}
	return certFile, pairFile, nil
}

// haproxyConfig is what the pair's two configs are made from.
type haproxyConfig struct {
	threads  int    // nbthread of each end
	front    string // the client end's plain HTTP listener
	between  string // the server end's TLS listener
	app      string // the app, plain HTTP
	certFile string // the trust anchor
	pairFile string // certificate and key
}

// haproxyHead is the part both ends share: HTTP mode, keep-alive on both
// sides, and timeouts that bound every stall.
func haproxyHead(threads int) string {
	return fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
  log stderr format raw local0 err
defaults
  mode http
  log global
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
`, threads)
}

// client is the client end: plain HTTP/1.1 in, TLS 1.3 out to the server
// end with a client certificate, the server's certificate verified, and
// the TLS connections kept and reused across requests (http-reuse always),
// as the mesh keeps its one QUIC connection.
func (c haproxyConfig) client() string {
	return haproxyHead(c.threads) + fmt.Sprintf(`frontend front
  bind %s
  default_backend tls
backend tls
  http-reuse always
  server b %s ssl crt %s ca-file %s verify required verifyhost %s sni str(%s) ssl-min-ver TLSv1.3 alpn http/1.1
`, c.front, c.between, c.pairFile, c.certFile, haproxyName, haproxyName)
}

// server is the server end: TLS in, the client certificate verified, plain
// HTTP/1.1 on to the app, its connections kept too.
func (c haproxyConfig) server() string {
	return haproxyHead(c.threads) + fmt.Sprintf(`frontend tls
  bind %s ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3 alpn http/1.1
  default_backend app
backend app
  http-reuse always
  server app %s
`, c.between, c.pairFile, c.certFile, c.app)
}

// startHAProxy writes both configs and starts the server end on b and the
// client end on a; it returns the two processes.
func startHAProxy(procs *procSet, a, b cpuhost.Host, dir string, c haproxyConfig) (client, server *proc, err error) {
	for _, end := range []struct {
		name string
		h    cpuhost.Host
		conf string
		out  **proc
	}{{"haproxy-server", b, c.server(), &server}, {"haproxy-client", a, c.client(), &client}} {
		f := filepath.Join(dir, end.name+".cfg")
		if err := os.WriteFile(f, []byte(end.conf), 0o600); err != nil {
			return nil, nil, err
		}
		p, err := procs.start(end.h, dir, end.name, "haproxy", "-db", "-f", f)
		if err != nil {
			return nil, nil, err
		}
		*end.out = p
	}
	return client, server, nil
}
