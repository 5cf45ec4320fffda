// Package raftca connects the mesh CA to the Raft store: the internal KV
// namespace of a raftstore.Node as a ca.StateStore, its RPC client as a
// ca.RPCDoer, and the keytls trust of its server port to the CA's leaves.
// It is the only place where package ca meets package raftstore.
package raftca

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/raftstore"
)

// PrivateKV are the CA's keys that only server agents may read (set them in
// raftstore.Config.PrivateKV). Client agents read ca.KeyBundle only.
var PrivateKV = []string{ca.KeyAuthority, ca.KeyTokens + "/", ca.KeyNodes + "/", ca.KeyLeafPrefix}

// PrivateBoundKV is the CA's public key that is made from its private ones
// (set it in raftstore.Config.PrivateBoundKV): the trust bundle. A backup
// without the private state leaves it out too, and its restore keeps the
// current bundle with the current keys, so that agents keep trusting the
// roots the CA signs under.
var PrivateBoundKV = []string{ca.KeyBundle}

// KeepOnRestore is the CA's state that a snapshot restore must not take
// back (set it in raftstore.Config.KeepOnRestore): the ledger of used
// bootstrap tokens. It only grows, but for the IDs of tokens past their
// expiry (which no server accepts any more), so the current ledger holds
// every use an older one does; a restore that took it back would let a
// token used since the backup be used again.
var KeepOnRestore = []string{ca.KeyTokens + "/"}

// State returns n's internal KV namespace as a ca.StateStore.
func State(n *raftstore.Node) ca.StateStore { return state{n} }

type state struct{ n *raftstore.Node }

func (s state) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	v, idx, err := s.n.KVGet(ctx, key)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil, 0, nil
	}
	return v, idx, err
}

func (s state) CAS(ctx context.Context, key string, val []byte, index uint64) error {
	_, err := s.n.KVCAS(ctx, key, val, index)
	if errors.Is(err, raftstore.ErrCASConflict) {
		return fmt.Errorf("%w: %w", ca.ErrConflict, err)
	}
	return err
}

func (s state) Delete(ctx context.Context, key string) error {
	err := s.n.KVDelete(ctx, key, 0)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil
	}
	return err
}

// Watch waits on the global KV index (never below a key's modify index) and
// answers once the key's own modify index differs from index.
func (s state) Watch(ctx context.Context, key string, index uint64) ([]byte, uint64, error) {
	global := index
	for {
		entries, g, err := s.n.KVWatch(ctx, key, global)
		if err != nil {
			return nil, 0, err
		}
		var val []byte
		var mod uint64
		for _, e := range entries {
			if e.Key == key { // KVWatch takes a prefix
				val, mod = e.Value, e.ModifyIndex
			}
		}
		if mod != index {
			return val, mod, nil
		}
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		global = g
	}
}

// Servers lists the server ports discovery knows, reachable ones first, for
// ca.AgentDeps.Servers.
func Servers(d raftstore.Discovery) func(context.Context) ([]string, error) {
	return func(context.Context) ([]string, error) {
		list, _ := d.Watch()
		var up, down []string
		for _, s := range list {
			if s.Status.Reachable() {
				up = append(up, s.Addr)
			} else {
				down = append(down, s.Addr)
			}
		}
		return append(up, down...), nil
	}
}

// ClientTLS is n's client TLS config of the server port (cluster key, plus
// the mesh trust TrustMesh adds), for ca.AgentDeps.RPCTLS: the CA's own RPC
// client then opens a new connection per call and presents the leaf it
// renews.
func ClientTLS(n *raftstore.Node) func() *tls.Config {
	return func() *tls.Config { return n.TLS().ClientConfig(raftstore.ALPNRPC) }
}

// Doer returns c as a ca.RPCDoer: an error answer comes back as its status
// and {"error","code"} body, which is how ca reads it. c pools its
// connections, and a TLS client certificate belongs to a connection: a
// renewal may then go out on a connection opened with the cluster-key leaf
// and be refused (the agent retries). Prefer Servers with ClientTLS.
func Doer(c *raftstore.RPCClient) ca.RPCDoer {
	return func(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
		return c.Exchange(ctx, method, path, body, raftstore.CallOptions{})
	}
}

// TrustMesh makes n's server port (and its RPC client) accept peers whose
// leaf chains to the mesh bundle, besides cluster-key leaves. Call it on
// every agent; it follows the manager's bundle by itself.
func TrustMesh(n *raftstore.Node, m *ca.Manager) { n.TLS().AddTrust(m) }

// PresentMeshLeaf makes n present the manager's leaf on its connections to
// the server port while that leaf is valid under the manager's bundle, and
// its cluster-key leaf otherwise, following every change until ctx ends. It
// returns at once.
//
// Client agents need it: a renewal is authenticated by the leaf the
// connection presents. Servers should not use it on their own port: a new
// agent, which holds only the cluster key and a token, could not verify a
// mesh leaf before it has the bundle.
func PresentMeshLeaf(ctx context.Context, n *raftstore.Node, m *ca.Manager) {
	leaf := func() (*tls.Certificate, error) { return m.GetCertificate(nil) }
	update := func() {
		cert, err := m.GetCertificate(nil)
		if err == nil {
			_, err = m.VerifyPeer(cert.Certificate)
		}
		if err != nil {
			n.TLS().SetCertificate(nil)
			return
		}
		n.TLS().SetCertificate(leaf)
	}
	update()
	go func() {
		for {
			ch := m.Changes()
			update()
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
}
