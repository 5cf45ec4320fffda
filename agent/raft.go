package agent

import (
	"fmt"
	"net"
	"strconv"

	"github.com/meshwork/meshwork/ca/raftca"
	"github.com/meshwork/meshwork/internal/keytls"
	"github.com/meshwork/meshwork/raftstore"
)

// buildRaft makes the policy plane: on every agent the replicated policy
// and ACL copies and the client of the servers, on a server the Raft peer
// on the server port. Servers are found in the gossip catalog; the local
// API gets the policy, operator and snapshot endpoints (buildHTTP).
func (a *Agent) buildRaft() error {
	key, err := keytls.ParseKey(a.cfg.ClusterKey)
	if err != nil {
		return fmt.Errorf("agent: cluster_key: %w", err)
	}
	var serverKey []byte
	if a.cfg.Server && a.cfg.ServerKey != "" {
		if serverKey, err = keytls.ParseKey(a.cfg.ServerKey); err != nil {
			return fmt.Errorf("agent: server_key: %w", err)
		}
	}
	acceptKeys, err := parseKeys("accept_cluster_keys", a.cfg.AcceptClusterKeys)
	if err != nil {
		return err
	}
	var acceptServerKeys [][]byte
	if a.cfg.Server && serverKey != nil {
		if acceptServerKeys, err = parseKeys("accept_server_keys", a.cfg.AcceptServerKeys); err != nil {
			return err
		}
	}
	rc := raftstore.Config{
		NodeName:          a.cfg.Node,
		DataDir:           a.cfg.DataDir,
		ClusterKey:        key,
		AcceptClusterKeys: acceptKeys,
		ServerKey:         serverKey,
		AcceptServerKeys:  acceptServerKeys,
		Server:            a.cfg.Server,
		BootstrapExpect:   a.cfg.BootstrapExpect,
		// The CA's sealed keys, token ledger and leaf records stay on the
		// servers; client agents read the public bundle only. A backup
		// without them leaves the bundle out too, and no restore takes
		// the ledger of used tokens back.
		PrivateKV:      raftca.PrivateKV,
		PrivateBoundKV: raftca.PrivateBoundKV,
		KeepOnRestore:  raftca.KeepOnRestore,
	}
	if !a.cfg.Server {
		rc.BootstrapExpect = 0
	}
	if a.cfg.Server && a.cfg.ACL.Enabled {
		rc.ACLInitialManagement = a.cfg.ACL.Tokens.InitialManagement
	}
	if a.cfg.Server {
		port := strconv.Itoa(a.cfg.Ports.Raft)
		rc.BindAddr = net.JoinHostPort(a.cfg.Bind, port)
		rc.AdvertiseAddr = net.JoinHostPort(a.cfg.Advertise, port)
		rc.DeadServerThreshold = a.cfg.Raft.DeadServerAfter.D()
		if a.cfg.Raft.SnapshotThreshold > 0 {
			rc.SnapshotThreshold = uint64(a.cfg.Raft.SnapshotThreshold)
		}
	}
	n, err := raftstore.New(rc, raftstore.Deps{
		Logger:     a.logger("raft"),
		Registerer: a.reg,
		Discovery:  raftstore.CatalogDiscovery(a.store),
		Listener:   a.deps.RaftListener,
		Dial:       a.deps.RaftDial,
	})
	if err != nil {
		return err
	}
	a.raft = n
	// Servers publish their Raft port and bootstrap_expect in the node
	// record, which is how the others find them and agree to bootstrap.
	if meta := raftstore.MemberMeta(rc); len(meta) > 0 {
		info := a.local.NodeInfo()
		info.Meta = meta
		if err := a.local.SetNodeInfo(info); err != nil {
			return err
		}
	}
	a.add("raft", n.Start, n.Close)
	return nil
}

// parseKeys decodes the keys of the list at path; an error names the entry,
// never the key.
func parseKeys(path string, keys []string) ([][]byte, error) {
	var out [][]byte
	for i, s := range keys {
		k, err := keytls.ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("agent: %s[%d]: %w", path, i, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// Raft is the agent's policy plane: the policy copy the data plane reads
// (Policy, Replica), the internal key/value state the CA keeps (KVState),
// and the RPC port of the servers (MountRPC, RPC, TLS).
func (a *Agent) Raft() *raftstore.Node { return a.raft }
