package ca

import (
	"context"
	"crypto/x509"
	"testing"
	"time"
)

// BenchmarkRenew measures one renewal on a server: verify the presented
// chain, sign through the smallstep authority, record the leaf (MemStore).
// bench/ca measures the same with concurrency, over RPC and against step-ca.
func BenchmarkRenew(b *testing.B) {
	st := NewMemStore()
	srv, err := NewServer(ServerConfig{TrustDomain: testTD, Node: "srv1", StateKey: make([]byte, StateKeySize)}, ServerDeps{State: st})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	k, _ := newKey()
	id, _ := NewIdentity(testTD, "n1", []string{"web"})
	der, _ := newCSR(id, k)
	csr, _ := x509.ParseCertificateRequest(der)
	tok, _, _ := srv.Token(ctx, "n1", 0)
	is, err := srv.SignWithToken(ctx, tok, csr, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := srv.Renew(context.Background(), is.Chain, csr, ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
