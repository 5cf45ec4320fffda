package ca

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/internal/testnet"
)

// validitySampler checks, until stopped, that the manager holds a leaf valid
// at every moment it is asked.
type validitySampler struct {
	bad     atomic.Int64
	samples atomic.Int64
	first   atomic.Pointer[string]
	stop    chan struct{}
	done    chan struct{}
}

func sampleValidity(m *Manager) *validitySampler {
	s := &validitySampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 0; i < 1_000_000; i++ { // bounded
			select {
			case <-s.stop:
				return
			default:
			}
			cert, err := m.GetCertificate(nil)
			now := time.Now()
			s.samples.Add(1)
			if err != nil || now.Before(cert.Leaf.NotBefore) || !now.Before(cert.Leaf.NotAfter) {
				if s.bad.Add(1) == 1 {
					msg := "no certificate"
					if err == nil {
						msg = "leaf valid " + cert.Leaf.NotBefore.String() + " to " + cert.Leaf.NotAfter.String() + " at " + now.String()
					}
					s.first.Store(&msg)
				}
			}
			time.Sleep(time.Millisecond) // pacing the sampler, not synchronising
		}
	}()
	return s
}

func (s *validitySampler) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	<-s.done
	if n := s.bad.Load(); n > 0 {
		t.Fatalf("%d of %d samples found no valid leaf; first: %s", n, s.samples.Load(), *s.first.Load())
	}
	if s.samples.Load() < 100 {
		t.Fatalf("only %d samples", s.samples.Load())
	}
}

// TestRenewalBeforeExpiryNoGap runs leaves of 5 seconds through several
// renewals over mTLS, one of them across a state-store outage, and checks
// that the manager always holds a valid leaf and replaces each one before
// it expires.
func TestRenewalBeforeExpiryNoGap(t *testing.T) {
	c := newCluster(t)
	mem := c.state.(*MemStore)
	srv := c.server("srv1", func(sc *ServerConfig, _ *ServerDeps) { sc.LeafTTL = 5 * time.Second })
	rs := c.rpc(srv)
	reg := prometheus.NewRegistry()
	tok := c.token(srv, "app-1")
	m := c.newManager("app-1", func(mc *ManagerConfig) {
		mc.Token = tok
		mc.Rand = func() float64 { return 0.5 }
		mc.RetryMin, mc.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	}, nil, fixed(rs.addr))
	m.met = mustManagerMetrics(t, reg, m)
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.WaitReady(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	sampler := sampleValidity(m)

	prev, _ := m.GetCertificate(nil)
	if life := prev.Leaf.NotAfter.Sub(prev.Leaf.NotBefore); life > 6*time.Second {
		t.Fatalf("leaf lifetime %s, want about 5s", life)
	}
	renewals := 0
	outage := false
	deadline := time.After(60 * time.Second)
	for renewals < 4 {
		ch := m.Changes()
		cur, _ := m.GetCertificate(nil)
		if cur.Leaf.SerialNumber.Cmp(prev.Leaf.SerialNumber) != 0 {
			now := time.Now()
			if !now.Before(prev.Leaf.NotAfter) {
				t.Fatalf("renewal %d installed at %s, after the previous leaf expired at %s", renewals+1, now, prev.Leaf.NotAfter)
			}
			if cur.Leaf.NotAfter.Sub(prev.Leaf.NotAfter) <= 0 {
				t.Fatalf("renewal %d does not extend the validity", renewals+1)
			}
			renewals++
			prev = cur
			if renewals == 2 && !outage {
				// The next renewal meets an outage of the state store (no
				// Raft leader): it must retry, and succeed once the store
				// is back, still before expiry.
				outage = true
				mem.SetDown(true)
				errs := m.met.renewals.WithLabelValues("error")
				before := metricValue(errs)
				testnet.Eventually(t, 10*time.Second, "a failed renewal during the outage", testnet.Holds(func() bool { return metricValue(errs) > before }))
				mem.SetDown(false)
			}
			continue
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("only %d renewals before the deadline", renewals)
		}
	}
	sampler.finish(t)
	if got := metricValue(m.met.renewals.WithLabelValues("ok")); got < 5 {
		t.Fatalf("%s{result=ok} = %v, want at least 5 (bootstrap + 4 renewals)", MetricRenewals, got)
	}
}

func mustManagerMetrics(t *testing.T, reg prometheus.Registerer, m *Manager) *managerMetrics {
	t.Helper()
	mm, err := newManagerMetrics(reg, m)
	if err != nil {
		t.Fatal(err)
	}
	return mm
}

// TestRenewalScheduleWithJitter checks the schedule itself with an injected
// clock: two thirds of the lifetime, brought forward by at most the jitter.
func TestRenewalScheduleWithJitter(t *testing.T) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		rand   float64
		jitter float64
		want   time.Duration
	}{
		{"no jitter", 0, 0.05, 16 * time.Hour},
		{"full jitter", 0.999999, 0.05, 16*time.Hour - 72*time.Minute},
		{"half", 0.5, 0.1, 16*time.Hour - 72*time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &Manager{cfg: ManagerConfig{RenewFraction: DefaultRenewFraction, Jitter: tc.jitter, Now: func() time.Time { return base }, Rand: func() float64 { return tc.rand }}}
			c := newTestLeaf(t, base, base.Add(24*time.Hour))
			ls := m.leafState(c, nil, Identity{}, "")
			if got := ls.renewAt.Sub(base); got < tc.want-time.Second || got > tc.want+time.Second {
				t.Fatalf("renewal after %s, want %s", got, tc.want)
			}
		})
	}
}

// TestRestartKeepsLeaf checks that a restarted agent reuses its saved leaf
// without a token, and that the file holding the key is 0600.
func TestRestartKeepsLeaf(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	dir := t.TempDir()
	tok := c.token(srv, "app-1")
	m1 := c.manager("app-1", func(mc *ManagerConfig) { mc.Token = tok; mc.DataDir = dir }, nil, fixed(rs.addr))
	first, _ := m1.GetCertificate(nil)
	m1.Close()
	assertMode(t, dir+"/"+leafFile, 0o600)

	m2 := c.newManager("app-1", func(mc *ManagerConfig) { mc.DataDir = dir }, nil, fixed(rs.addr))
	if err := m2.Start(context.Background()); err != nil {
		t.Fatalf("restart without token: %v", err)
	}
	defer m2.Close()
	select {
	case <-m2.Ready():
	default:
		t.Fatal("a restarted manager with a saved leaf and bundle is not ready at once")
	}
	again, _ := m2.GetCertificate(nil)
	if again.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatal("the saved leaf was not reused")
	}
	// A saved leaf of another node is ignored.
	m3 := c.newManager("app-2", func(mc *ManagerConfig) { mc.DataDir = dir }, nil, fixed(rs.addr))
	if err := m3.Start(context.Background()); !errors.Is(err, ErrNoCredentials) {
		m3.Close()
		t.Fatalf("a manager for app-2 on app-1's saved leaf: Start = %v, want ErrNoCredentials", err)
	}
}

// TestGetCertificateFollowsRenewalWithoutRestart shows what the data plane
// relies on: one listener, never restarted, serves the new leaf after a
// renewal, and a connection opened before the renewal keeps working.
func TestGetCertificateFollowsRenewalWithoutRestart(t *testing.T) {
	c := newCluster(t)
	srv := c.server("srv1", nil)
	rs := c.rpc(srv)
	a := c.manager("a", func(mc *ManagerConfig) { mc.Token = c.token(srv, "a") }, nil, fixed(rs.addr))
	b := c.manager("b", func(mc *ManagerConfig) { mc.Token = c.token(srv, "b") }, nil, fixed(rs.addr))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", a.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // echo server, bounded to 3 connections
		defer wg.Done()
		for range 3 {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, 64)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					if _, err := conn.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	dial := func() (*tls.Conn, []byte) {
		t.Helper()
		conn, err := tls.Dial("tcp", ln.Addr().String(), b.ClientTLSConfig())
		if err != nil {
			t.Fatal(err)
		}
		return conn, conn.ConnectionState().PeerCertificates[0].Raw
	}
	echo := func(conn *tls.Conn) {
		t.Helper()
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := conn.Read(buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
	}
	old, oldCert := dial()
	defer old.Close()
	echo(old)
	if err := a.SetServices([]string{"web"}); err != nil { // forces a new leaf
		t.Fatal(err)
	}
	waitLeafIDs(t, a, []string{"spiffe://mesh.test/node/a", "spiffe://mesh.test/svc/web"}, 10*time.Second)
	fresh, freshCert := dial()
	defer fresh.Close()
	echo(fresh)
	if string(freshCert) == string(oldCert) {
		t.Fatal("the listener still serves the old leaf")
	}
	echo(old) // the connection made before the renewal survives
	ln.Close()
	wg.Wait()
}
