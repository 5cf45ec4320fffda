package raftstore

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/keytls"
	"github.com/meshwork/meshwork/internal/testnet"
)

// privateCluster is a cluster whose state has private keys ("sealed/",
// and SecretPrefix), a public key bound to them ("bundle") and a ledger
// that no restore takes back ("ledger/").
func privateCluster(t *testing.T, n int) *TestCluster {
	return MakeTestCluster(t, n, TestOptions{Configure: func(c *Config) {
		c.PrivateKV = []string{"sealed/"}
		c.PrivateBoundKV = []string{"bundle"}
		c.KeepOnRestore = []string{"ledger/"}
	}})
}

func mustSet(t *testing.T, n *Node, kv ...string) {
	t.Helper()
	for i := 0; i < len(kv); i += 2 {
		if _, err := n.KVSet(ctxT(t, 30*time.Second), kv[i], []byte(kv[i+1])); err != nil {
			t.Fatalf("set %s: %v", kv[i], err)
		}
	}
}

func saveBackup(t *testing.T, n *Node) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := n.SaveSnapshot(ctxT(t, 30*time.Second), &b); err != nil {
		t.Fatalf("save through %s: %v", n.cfg.NodeName, err)
	}
	return b.Bytes()
}

// gunzip returns the backup's bytes as stored, header and state.
func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// kvOf returns the keys of a state with their values.
func kvOf(st *fsmState) map[string]string {
	out := map[string]string{}
	for _, e := range st.kvList("", nil) {
		out[e.Key] = string(e.Value)
	}
	return out
}

// restoreAndWait restores b through n and waits until every server of c
// has applied the restore.
func restoreAndWait(t *testing.T, c *TestCluster, n *Node, b []byte) uint64 {
	t.Helper()
	idx, err := n.RestoreSnapshot(ctxT(t, 60*time.Second), bytes.NewReader(b))
	if err != nil {
		t.Fatalf("restore through %s: %v", n.cfg.NodeName, err)
	}
	for _, s := range c.Servers() {
		testnet.Eventually(t, 20*time.Second, s.Name+" restored", testnet.Holds(func() bool { return s.Node.fsm.state().kvIndex >= idx }))
	}
	return idx
}

// requireKV checks the given keys on every server: a value, or "" for an
// absent key.
func requireKV(t *testing.T, c *TestCluster, when string, want map[string]string) {
	t.Helper()
	for _, s := range c.Servers() {
		got := kvOf(s.Node.fsm.state())
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: %s holds %s = %q, want %q", when, s.Name, k, got[k], v)
			}
		}
	}
}

// meshLeaf makes a certificate authority of its own and a client leaf
// under it that names node, as the mesh CA's leaves are outside the
// cluster key.
func meshLeaf(t *testing.T, node string) (*x509.CertPool, *tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test mesh CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestBackupPrivateStateOnlyForServers saves backups through a client
// agent, through servers, and through an agent presenting a leaf of
// another CA that names a server: only the servers get the private state.
func TestBackupPrivateStateOnlyForServers(t *testing.T) {
	c := privateCluster(t, 3)
	client := c.AddClient("client")
	leader := c.Leader()
	const sealed = "PRIVATE-KEY-MATERIAL"
	mustSet(t, leader.Node, "sealed/ca-key", sealed, "secret/x", "secret-x", "bundle", "bundle-1", "public/a", "public-1")

	// Through a client agent: version 2, marked, without the private keys
	// and the bound one, with everything else.
	b := saveBackup(t, client.Node)
	h, st, err := readBackup(b)
	if err != nil {
		t.Fatalf("the client's backup does not read back: %v", err)
	}
	if h.Version != 2 || h.Private != backupPrivateOmitted || !slices.Equal(h.OmittedKV, []string{"bundle", "sealed/", SecretPrefix}) {
		t.Fatalf("client backup header %+v, want version 2, private omitted, omitted [bundle sealed/ secret/]", h)
	}
	got := kvOf(st)
	for _, k := range []string{"sealed/ca-key", "secret/x", "bundle"} {
		if _, ok := got[k]; ok {
			t.Fatalf("the client's backup holds %s", k)
		}
	}
	if got["public/a"] != "public-1" {
		t.Fatalf("the client's backup lacks the public key: %v", got)
	}
	raw := gunzip(t, b)
	for _, s := range []string{sealed, base64.StdEncoding.EncodeToString([]byte(sealed)), "sealed/ca-key"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Fatalf("the client's backup contains %q", s)
		}
	}

	// Through every server, leader or not: everything.
	for _, s := range c.Servers() {
		h, st, err := readBackup(saveBackup(t, s.Node))
		if err != nil {
			t.Fatal(err)
		}
		got := kvOf(st)
		if h.Version != 1 || h.Private != backupPrivateIncluded || got["sealed/ca-key"] != sealed || got["secret/x"] != "secret-x" || got["bundle"] != "bundle-1" {
			t.Fatalf("backup through server %s: header %+v, keys %v; want the whole state", s.Name, h, got)
		}
	}

	// An agent with the cluster key that presents a leaf of another
	// trusted CA naming the leader: not a server.
	pool, leaf := meshLeaf(t, leader.Name)
	for _, s := range c.Servers() {
		s.Node.TLS().AddTrust(keytls.TrustFunc(func() *x509.CertPool { return pool }))
	}
	auth, err := keytls.New(keytls.Config{Key: c.Key, NodeName: "impostor"})
	if err != nil {
		t.Fatal(err)
	}
	auth.SetCertificate(func() (*tls.Certificate, error) { return leaf, nil })
	imp, err := New(Config{NodeName: "impostor", DataDir: t.TempDir(), ClusterKey: c.Key},
		Deps{Discovery: c.Disc, Dial: c.net.dialer("impostor"), TLS: auth})
	if err != nil {
		t.Fatal(err)
	}
	if err := imp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { imp.Close() })
	if h, st, err := readBackup(saveBackup(t, imp)); err != nil || h.Private != backupPrivateOmitted || kvOf(st)["sealed/ca-key"] != "" {
		t.Fatalf("backup through a mesh leaf naming %s: %+v, %v", leader.Name, h, err)
	}
}

// TestRestoreKeepsPrivateStateAndLedger restores a backup without the
// private state, then a whole one: the first keeps the private keys and
// the bound one, both keep the ledger, and keys of neither kind go back.
func TestRestoreKeepsPrivateStateAndLedger(t *testing.T) {
	c := privateCluster(t, 3)
	client := c.AddClient("client")
	leader := c.Leader()
	mustSet(t, leader.Node, "sealed/ca-key", "key-1", "bundle", "bundle-1", "public/a", "public-1", "ledger/t0", "used")
	public := saveBackup(t, client.Node)
	whole := saveBackup(t, c.Servers()[(c.Index(leader)+1)%3].Node)

	// After the backups: the keys change, a token is used, and a control
	// key that no restore keeps is created.
	mustSet(t, leader.Node, "sealed/ca-key", "key-2", "bundle", "bundle-2", "public/a", "public-2", "secret/x", "secret-2")
	for _, k := range []string{"ledger/t1", "other/t1"} {
		if _, err := client.Node.KVCAS(ctxT(t, 30*time.Second), k, []byte("used"), 0); err != nil {
			t.Fatal(err)
		}
	}

	restoreAndWait(t, c, client.Node, public)
	requireKV(t, c, "after restoring the backup without private state", map[string]string{
		"sealed/ca-key": "key-2", "bundle": "bundle-2", "secret/x": "secret-2", // kept
		"ledger/t0": "used", "ledger/t1": "used", // kept, and the backup's
		"public/a": "public-1", "other/t1": "", // restored
	})
	if _, err := client.Node.KVCAS(ctxT(t, 30*time.Second), "ledger/t1", []byte("again"), 0); !errors.Is(err, ErrCASConflict) {
		t.Fatalf("second use of a ledger entry after the restore = %v, want ErrCASConflict", err)
	}
	if _, err := client.Node.KVCAS(ctxT(t, 30*time.Second), "other/t1", []byte("again"), 0); err != nil {
		t.Fatalf("the control key, which the restore took back, cannot be created again: %v", err)
	}

	// A whole backup, through a server, restores the private state too.
	if _, err := client.Node.KVCAS(ctxT(t, 30*time.Second), "ledger/t2", []byte("used"), 0); err != nil {
		t.Fatal(err)
	}
	restoreAndWait(t, c, leader.Node, whole)
	requireKV(t, c, "after restoring a whole backup", map[string]string{
		"sealed/ca-key": "key-1", "bundle": "bundle-1", "secret/x": "", "public/a": "public-1",
		"ledger/t0": "used", "ledger/t1": "used", "ledger/t2": "used",
	})

	// On a new cluster, the backup's ledger is all there is.
	fresh := privateCluster(t, 1)
	restoreAndWait(t, fresh, fresh.Leader().Node, whole)
	requireKV(t, fresh, "a new cluster", map[string]string{"ledger/t0": "used", "sealed/ca-key": "key-1"})
}

// TestRestoreLosesNoConcurrentLedgerWrite uses ledger entries while
// backups are restored: every use acknowledged, before, during or after a
// restore, is still there at the end.
func TestRestoreLosesNoConcurrentLedgerWrite(t *testing.T) {
	c := privateCluster(t, 3)
	leader := c.Leader()
	mustSet(t, leader.Node, "public/a", "1")
	backup := saveBackup(t, leader.Node)
	var (
		mu    sync.Mutex
		acked []string
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("ledger/%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := leader.Node.KVCAS(ctx, key, []byte("used"), 0)
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for round := 1; round <= 3; round++ {
		testnet.Eventually(t, 30*time.Second, "writes before the restore", testnet.Holds(func() bool { return count() >= 20*round }))
		if _, err := leader.Node.RestoreSnapshot(ctxT(t, 60*time.Second), bytes.NewReader(backup)); err != nil {
			t.Fatalf("restore %d: %v", round, err)
		}
	}
	n := count()
	testnet.Eventually(t, 30*time.Second, "writes after the restores", testnet.Holds(func() bool { return count() >= n+20 }))
	close(stop)
	<-done
	idx, err := leader.Node.KVSet(ctxT(t, 30*time.Second), "last", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Servers() {
		testnet.Eventually(t, 20*time.Second, s.Name+" caught up", testnet.Holds(func() bool { return s.Node.fsm.state().kvIndex >= idx }))
		st := s.Node.fsm.state()
		for _, k := range acked {
			if _, ok := st.kvGet(k); !ok {
				t.Fatalf("%s lost %s, a use acknowledged around a restore (%d acknowledged)", s.Name, k, len(acked))
			}
		}
	}
	t.Logf("%d ledger writes acknowledged across 3 restores", len(acked))
}

// writeBackup makes a backup of state data under header h.
func writeBackup(h backupHeader, data []byte) []byte {
	sum := sha256.Sum256(data)
	h.Format, h.Size, h.SHA256 = BackupFormat, int64(len(data)), hex.EncodeToString(sum[:])
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	hb, _ := json.Marshal(h)
	_, _ = zw.Write(append(hb, '\n'))
	_, _ = zw.Write(data)
	_ = zw.Close()
	return b.Bytes()
}

func TestBackupHeaderChecks(t *testing.T) {
	withKey, _ := json.Marshal(snapshotData{Version: 1, KV: []KVEntry{{Key: "sealed/k", Value: []byte("v"), CreateIndex: 1, ModifyIndex: 1}}})
	empty, _ := json.Marshal(snapshotData{Version: 1})
	for _, tc := range []struct {
		name string
		h    backupHeader
		data []byte
		ok   bool
	}{
		{"version 1 of old, no private field", backupHeader{Version: 1}, withKey, true},
		{"version 1, whole", backupHeader{Version: 1, Private: backupPrivateIncluded}, withKey, true},
		{"version 2, without the private state", backupHeader{Version: 2, Private: backupPrivateOmitted, OmittedKV: []string{"sealed/"}}, empty, true},
		{"version 1 claiming an omission", backupHeader{Version: 1, Private: backupPrivateOmitted, OmittedKV: []string{"sealed/"}}, empty, false},
		{"version 2 claiming the whole state", backupHeader{Version: 2, Private: backupPrivateIncluded}, withKey, false},
		{"version 2 without prefixes", backupHeader{Version: 2, Private: backupPrivateOmitted}, empty, false},
		{"version 2 with an empty prefix", backupHeader{Version: 2, Private: backupPrivateOmitted, OmittedKV: []string{""}}, empty, false},
		{"version 2 holding an omitted key", backupHeader{Version: 2, Private: backupPrivateOmitted, OmittedKV: []string{"sealed/"}}, withKey, false},
		{"version 3", backupHeader{Version: 3, Private: backupPrivateIncluded}, withKey, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readBackup(writeBackup(tc.h, tc.data))
			if tc.ok && err != nil {
				t.Fatalf("readBackup = %v, want it read", err)
			}
			if !tc.ok && !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("readBackup = %v, want ErrBadSnapshot", err)
			}
		})
	}
}

// TestRestoreHoldsWritesWhileItMerges makes a write to the ledger in the
// middle of a restore, after the leader read the state it keeps and before
// Raft installed the result: the write waits for the restore and is kept.
func TestRestoreHoldsWritesWhileItMerges(t *testing.T) {
	c := privateCluster(t, 1)
	leader := c.Leader()
	mustSet(t, leader.Node, "public/a", "1")
	backup := saveBackup(t, leader.Node)
	result := make(chan error, 1)
	hook := func() {
		restoreMergedHook.Store(nil)
		go func() {
			_, err := leader.Node.KVCAS(ctxT(t, 30*time.Second), "ledger/during", []byte("used"), 0)
			result <- err
		}()
		// Give the write the time it needs to commit if nothing holds it:
		// a bound on the wait, not a condition of the test.
		select {
		case err := <-result:
			result <- err
		case <-time.After(time.Second):
		}
	}
	restoreMergedHook.Store(&hook)
	t.Cleanup(func() { restoreMergedHook.Store(nil) })
	restoreAndWait(t, c, leader.Node, backup)
	if err := <-result; err != nil {
		t.Fatalf("the write made during the restore: %v", err)
	}
	if _, ok := leader.Node.fsm.state().kvGet("ledger/during"); !ok {
		t.Fatal("a ledger write acknowledged during the restore was lost")
	}
	if _, err := leader.Node.KVCAS(ctxT(t, 30*time.Second), "ledger/during", []byte("again"), 0); !errors.Is(err, ErrCASConflict) {
		t.Fatalf("second use = %v, want ErrCASConflict", err)
	}
}
