package raftstore

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/internal/keytls"
)

// DefaultPort is the server port: Raft and RPC, multiplexed by ALPN.
const DefaultPort = 7947

// ALPN protocol names on the server port.
const (
	ALPNRaft = "meshwork-raft/1"
	ALPNRPC  = "meshwork-rpc/1"
)

// Member meta keys a server agent publishes in its gossip record (see
// MemberMeta), read back by CatalogDiscovery.
const (
	MetaRaftPort        = "raft_port"
	MetaBootstrapExpect = "bootstrap_expect"
)

// Timing holds the Raft timers. The zero value means LANTiming.
type Timing struct {
	// HeartbeatTimeout is how long a follower waits without hearing from
	// the leader before it starts an election (randomised up to twice).
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without a quorum.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long a follower may wait to learn a commit.
	CommitTimeout time.Duration
}

// LANTiming is the production profile, for servers on one LAN.
//
// Failover: followers notice a dead leader after one to two heartbeat
// timeouts (randomised) and a pre-vote and vote round follow, so a leader
// is replaced in about 0.6-1.5 s, well under the 3 s target. Consul's
// raft_multiplier 1 (1 s timeouts) measured 2.0-2.7 s here, too close to it.
// The leader sends heartbeats every HeartbeatTimeout/10 (50 ms), so a
// follower calls an election only after ten missed heartbeats: a GC pause
// or an fsync stall of a few hundred milliseconds does not depose a leader.
// The leader lease is as long as it may be (the heartbeat timeout): it only
// decides when a leader cut off from its followers steps down, and a short
// one made leaders step down under CPU starvation in the benchmark.
//
// CommitTimeout is how soon followers learn of a commit when no new entry
// comes: watchers that stream from a follower see a write that much later,
// so it is 15 ms rather than raft's 50 ms; the cost is an empty
// AppendEntries per follower every 15-30 ms while idle.
var LANTiming = Timing{
	HeartbeatTimeout:   500 * time.Millisecond,
	ElectionTimeout:    500 * time.Millisecond,
	LeaderLeaseTimeout: 500 * time.Millisecond,
	CommitTimeout:      15 * time.Millisecond,
}

// FastTiming is for tests in one process. It keeps LANTiming's election
// timers (shorter ones depose leaders under the race detector on a busy
// two-core machine) and commits sooner.
var FastTiming = Timing{
	HeartbeatTimeout:   500 * time.Millisecond,
	ElectionTimeout:    500 * time.Millisecond,
	LeaderLeaseTimeout: 500 * time.Millisecond,
	CommitTimeout:      10 * time.Millisecond,
}

func (t Timing) orDefault() Timing {
	if t == (Timing{}) {
		return LANTiming
	}
	return t
}

// Config configures a Node. Every agent has one; the server fields matter
// only when Server is true.
type Config struct {
	// NodeName is this agent's name, also its Raft server ID. Required.
	NodeName string
	// DataDir holds raft/ (log, stable store, snapshots; servers only) and
	// policy.json (the last policy, every agent). Required.
	DataDir string
	// ClusterKey is the decoded shared secret (32 bytes) from which the
	// mutual TLS of the server port is derived. Required.
	ClusterKey []byte
	// ServerKey is the decoded secret (32 bytes) that servers only hold,
	// the same on every server, from which they derive the server
	// authority (internal/keytls). With it, Raft's traffic and a server's
	// standing on the RPC routes (private backups, calls not decided by
	// ACL tokens) need a leaf of that authority: a holder of the cluster
	// key, which every agent is, can no longer act as a server. Servers
	// only; it must differ from ClusterKey. Default: none, and the server
	// port cannot tell a server from any agent (docs/security.md).
	ServerKey []byte
	// AcceptClusterKeys are further decoded cluster keys whose authorities
	// the server port trusts besides ClusterKey's, for a rotation of the
	// cluster key without a flag day (docs/operations.md); certificates
	// are minted from ClusterKey only. At most keytls.MaxAcceptKeys, none
	// equal to ClusterKey, ServerKey or each other. Default: none.
	AcceptClusterKeys [][]byte
	// AcceptServerKeys are further decoded server keys, as
	// AcceptClusterKeys are for ClusterKey. Servers with ServerKey only.
	// Default: none.
	AcceptServerKeys [][]byte

	// Server makes this agent a Raft server. Default false (client agent).
	Server bool
	// BootstrapExpect is the number of servers (1, 3 or 5) that bootstrap
	// the cluster together. 0 (the default) never bootstraps: the server
	// waits to be added to an existing cluster.
	BootstrapExpect int
	// BindAddr is where a server listens, unless Deps.Listener is given.
	// Default "0.0.0.0:7947".
	BindAddr string
	// AdvertiseAddr is the host:port other servers dial to reach this one.
	// Default: BindAddr when its host is not unspecified; required otherwise.
	AdvertiseAddr string

	// Timing holds the Raft timers. Default LANTiming.
	Timing Timing
	// ApplyTimeout bounds one write on the leader. Default 10s.
	ApplyTimeout time.Duration
	// MaxBatch is the most writes grouped into one Raft log entry.
	// Default 256.
	MaxBatch int
	// SnapshotThreshold is the number of log entries between snapshots.
	// Default 8192 (raft's).
	SnapshotThreshold uint64
	// SnapshotRetain is the number of snapshot files kept. Default 2.
	SnapshotRetain int

	// DeadServerThreshold is how long a server may stay failed in gossip
	// before autopilot removes it from the configuration. Default 2m.
	DeadServerThreshold time.Duration
	// StabilizationTime is how long a new server must stay healthy and
	// caught up before it is promoted to voter. Default 10s.
	StabilizationTime time.Duration
	// AutopilotInterval is how often the leader reconciles membership.
	// Default 2s.
	AutopilotInterval time.Duration

	// WatchHeartbeat is how often a policy stream sends a heartbeat; a
	// stream silent for three heartbeats is dropped. Default 2s.
	WatchHeartbeat time.Duration
	// StaleAfter is the staleness above which the policy is reported stale.
	// Default 30s.
	StaleAfter time.Duration
	// PrivateKV lists key prefixes of the internal namespace that are never
	// served over the network (only a server agent reads them, from its own
	// state machine), such as the CA's sealed key material. SecretPrefix is
	// always included. Default: just SecretPrefix.
	PrivateKV []string
	// PrivateBoundKV lists key prefixes of public keys that belong with
	// the private ones, such as the CA's trust bundle, made from its
	// sealed keys. A backup without the private state leaves them out too,
	// and its restore keeps the cluster's current ones, so that the two
	// never mismatch. Default: none.
	PrivateBoundKV []string
	// KeepOnRestore lists key prefixes that a snapshot restore never takes
	// back: the restored state has the cluster's current keys under them,
	// and the backup's only where the cluster has none (a new cluster).
	// It is for records that only grow, such as the CA's ledger of used
	// bootstrap tokens, which must not forget a use. Default: none.
	KeepOnRestore []string

	// ACLInitialManagement is the secret of a management token that the
	// leader makes when the ACL system was never bootstrapped, so that
	// automation needs no interactive bootstrap. Servers only. Default:
	// none.
	ACLInitialManagement string

	// RPCTimeout bounds one forwarded request, redirects and retries
	// included, when the caller's context has no deadline. Default 15s.
	RPCTimeout time.Duration

	// ShutdownTimeout bounds a server's Close: Raft's shutdown, then its
	// goroutines, transport and stores. Default ten heartbeat timeouts
	// (5s with LANTiming): a healthy shutdown takes well under a second,
	// and a follower that has not answered the leader's last append
	// within that long would have been deemed failed anyway. It leaves
	// room within systemd's TimeoutStopSec (30s) for the agent's other
	// components.
	ShutdownTimeout time.Duration
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.Timing = c.Timing.orDefault()
	if !slices.Contains(c.PrivateKV, SecretPrefix) {
		c.PrivateKV = append(slices.Clone(c.PrivateKV), SecretPrefix)
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0:" + strconv.Itoa(DefaultPort)
	}
	if c.AdvertiseAddr == "" {
		if ap, err := netip.ParseAddrPort(c.BindAddr); err == nil && !ap.Addr().IsUnspecified() {
			c.AdvertiseAddr = c.BindAddr
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ApplyTimeout, 10*time.Second)
	def(&c.DeadServerThreshold, 2*time.Minute)
	def(&c.StabilizationTime, 10*time.Second)
	def(&c.AutopilotInterval, 2*time.Second)
	def(&c.WatchHeartbeat, 2*time.Second)
	def(&c.StaleAfter, 30*time.Second)
	def(&c.RPCTimeout, 15*time.Second)
	def(&c.ShutdownTimeout, 10*c.Timing.HeartbeatTimeout)
	if c.MaxBatch == 0 {
		c.MaxBatch = 256
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
	return c
}

// Validate checks the config; its errors name the field and the value.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("raftstore: config: NodeName: required")
	}
	if c.DataDir == "" {
		return fmt.Errorf("raftstore: config: DataDir: required")
	}
	if err := checkClusterKey(c.ClusterKey); err != nil {
		return fmt.Errorf("raftstore: config: ClusterKey %w", err)
	}
	if err := CheckServerKey(c.Server, c.ServerKey, c.ClusterKey); err != nil {
		return fmt.Errorf("raftstore: config: ServerKey %w", err)
	}
	if err := CheckBootstrapExpect(c.Server, c.BootstrapExpect); err != nil {
		return fmt.Errorf("raftstore: config: BootstrapExpect %w", err)
	}
	if err := CheckInitialManagement(c.Server, c.ACLInitialManagement); err != nil {
		return fmt.Errorf("raftstore: config: ACLInitialManagement %w", err)
	}
	if c.AcceptClusterKeys != nil || c.AcceptServerKeys != nil {
		kc := keytls.Config{Key: c.ClusterKey, ServerKey: c.ServerKey, AcceptKeys: c.AcceptClusterKeys, AcceptServerKeys: c.AcceptServerKeys, NodeName: c.NodeName}
		if err := kc.Validate(); err != nil {
			return fmt.Errorf("raftstore: config: %w", err)
		}
	}
	d := c.withDefaults()
	if c.Server {
		if _, _, err := net.SplitHostPort(d.BindAddr); err != nil {
			return fmt.Errorf("raftstore: config: BindAddr %q: %v", c.BindAddr, err)
		}
		if d.AdvertiseAddr == "" {
			return fmt.Errorf("raftstore: config: AdvertiseAddr: required when BindAddr %q has no specific IP", d.BindAddr)
		}
		if _, _, err := net.SplitHostPort(d.AdvertiseAddr); err != nil {
			return fmt.Errorf("raftstore: config: AdvertiseAddr %q: want host:port: %v", c.AdvertiseAddr, err)
		}
	}
	t := d.Timing
	for name, v := range map[string]time.Duration{
		"Timing.HeartbeatTimeout": t.HeartbeatTimeout, "Timing.ElectionTimeout": t.ElectionTimeout,
		"Timing.LeaderLeaseTimeout": t.LeaderLeaseTimeout, "Timing.CommitTimeout": t.CommitTimeout,
		"ApplyTimeout": d.ApplyTimeout, "DeadServerThreshold": d.DeadServerThreshold,
		"StabilizationTime": d.StabilizationTime, "AutopilotInterval": d.AutopilotInterval,
		"WatchHeartbeat": d.WatchHeartbeat, "StaleAfter": d.StaleAfter, "RPCTimeout": d.RPCTimeout,
		"ShutdownTimeout": d.ShutdownTimeout,
	} {
		if v < 0 {
			return fmt.Errorf("raftstore: config: %s %s: must not be negative", name, v)
		}
	}
	if t.LeaderLeaseTimeout > t.HeartbeatTimeout {
		return fmt.Errorf("raftstore: config: Timing.LeaderLeaseTimeout %s: must not exceed HeartbeatTimeout %s", t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	}
	for name, list := range map[string][]string{"PrivateKV": c.PrivateKV, "PrivateBoundKV": c.PrivateBoundKV, "KeepOnRestore": c.KeepOnRestore} {
		for _, p := range list {
			if err := validKVKey(p); err != nil {
				return fmt.Errorf("raftstore: config: %s %q: a key prefix: %v", name, p, err)
			}
		}
	}
	if c.MaxBatch < 0 || c.MaxBatch > 4096 {
		return fmt.Errorf("raftstore: config: MaxBatch %d: must be between 1 and 4096", c.MaxBatch)
	}
	return nil
}
