package gossip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidConfig wraps every error Config.Validate returns.
var ErrInvalidConfig = errors.New("invalid gossip config")

// DefaultPort is the gossip port, UDP and TCP.
const DefaultPort = 7946

// Config configures one gossip member. The zero value is not usable: start
// from DefaultLANConfig (production) or FastTestConfig (in-process tests) and
// set NodeName.
type Config struct {
	// NodeName is this node's unique name in the cluster. Required.
	NodeName string

	// BindAddr is the IP address gossip listens on. Default "0.0.0.0".
	// Unused when Deps.Transport is set.
	BindAddr string
	// BindPort is the UDP and TCP port gossip listens on. Default 7946;
	// 0 lets the kernel pick one. Unused when Deps.Transport is set.
	BindPort int
	// AdvertiseAddr is the IP address other nodes use to reach this one.
	// Default "": the transport picks (the bind address, or the first
	// private address when bound to 0.0.0.0).
	AdvertiseAddr string
	// AdvertisePort is the port other nodes use. Default 0: the bound port.
	AdvertisePort int

	// Keyring holds the gossip encryption keys, base64, primary first (see
	// ParseKey). Default none: gossip is not encrypted. When KeyringFile
	// exists it wins over this list, because it holds the result of later
	// rotations.
	Keyring []string
	// KeyringFile is the path (normally in the data dir) where the keyring
	// is persisted, mode 0600, after every change so that rotations survive
	// a restart. Default "": not persisted.
	KeyringFile string

	// RetryJoin lists the addresses (host or host:port, the port defaulting
	// to DefaultPort) to join at start. Default none. They are tried, with
	// the peers remembered in PeersFile, until this node is in contact with
	// the cluster, and again whenever it loses contact (see join.go).
	RetryJoin []string
	// RetryJoinInterval is the wait after the first failed join attempt; it
	// doubles after each failure, with jitter. Default 1s.
	RetryJoinInterval time.Duration
	// RetryJoinMax caps the wait between join attempts while this node is
	// out of contact. Default 5s.
	RetryJoinMax time.Duration
	// PeersFile is the path (normally in the data dir) where this node
	// remembers the members it has seen, so that after a restart it rejoins
	// through them as well as through RetryJoin. Start reads it; it is
	// written atomically, mode 0600, when membership changes (at most once
	// per 10 GossipIntervals, 1 s by default) and at Close. A corrupt or
	// foreign file is logged and ignored. Default "": not remembered.
	PeersFile string

	// ReconnectInterval is how often one member that failed or left (within
	// its window below), or one remembered peer not seen yet, is tried again,
	// so that two sides of a healed partition find each other and a
	// restarted member is found again (memberlist itself never contacts a
	// node it declared dead). Stretched above 32 members. Default 2s.
	ReconnectInterval time.Duration
	// ReconnectTimeout is how long a failed member is kept, shown as failed
	// and retried, before it is forgotten. Default 72h.
	ReconnectTimeout time.Duration
	// LeftReconnectTimeout is how long a member that left gracefully is
	// still retried, in case it is restarting. At most TombstoneTimeout.
	// Default 30m.
	LeftReconnectTimeout time.Duration
	// TombstoneTimeout is how long a member that left gracefully is kept,
	// shown as left, before it is forgotten. Default 24h.
	TombstoneTimeout time.Duration

	// The tuning profile. DefaultLANConfig explains each value.

	// ProbeInterval is the time between two failure-detection probes of
	// this node (each probes one member per interval). Default 300ms.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct UDP probe waits for its ack before
	// indirect probes and the TCP fallback start. Default 150ms.
	ProbeTimeout time.Duration
	// IndirectChecks is the number of members asked to probe a node that
	// did not answer a direct probe. Default 3.
	IndirectChecks int
	// SuspicionMult scales the suspicion timeout:
	// SuspicionMult * max(1, log10(n)) * ProbeInterval. Default 10.
	SuspicionMult int
	// SuspicionMaxTimeoutMult is Lifeguard's upper bound on the suspicion
	// timeout, as a multiple of it, used while few confirmations arrive.
	// Default 4.
	SuspicionMaxTimeoutMult int
	// AwarenessMaxMultiplier bounds how much Lifeguard slows this node's
	// probing when it sees signs that it is itself degraded. Default 8.
	AwarenessMaxMultiplier int
	// GossipInterval is the time between two gossip rounds (sent only when
	// broadcasts are pending). Default 100ms.
	GossipInterval time.Duration
	// GossipNodes is the number of random members each gossip round sends
	// to. Default 3.
	GossipNodes int
	// GossipToTheDeadTime is how long a dead member still receives gossip,
	// so that it can learn of its death and refute it. Default 15s.
	GossipToTheDeadTime time.Duration
	// RetransmitMult scales how many times each broadcast is sent:
	// RetransmitMult * ceil(log10(n+1)). Default 4.
	RetransmitMult int
	// PushPullInterval is the time between two full state exchanges with a
	// random member (memberlist stretches it above 32 members). Default 15s.
	PushPullInterval time.Duration
	// TCPTimeout bounds stream connections and their reads and writes.
	// Default 5s.
	TCPTimeout time.Duration
	// DeadNodeReclaimTime is how long after its failure a node's name may be
	// taken by a node with another address (a replaced host). Default 30s.
	DeadNodeReclaimTime time.Duration
	// DisableTCPPings turns off the TCP fallback probe. Default false: the
	// fallback keeps nodes alive on networks that drop UDP, and its refused
	// connections are the fast evidence of a dead agent.
	DisableTCPPings bool
	// DisableRefusalEvidence turns off the early failure of a member whose
	// probe failed and whose gossip port refused a TCP connection; only
	// memberlist's suspicion timer then declares failures. Default false.
	DisableRefusalEvidence bool
	// EnableCompression compresses packets and streams (LZW). Default false:
	// messages are compact msgpack already, and compressing every packet
	// costs more CPU than the bandwidth it saves.
	EnableCompression bool
	// PacketSize is the largest gossip packet, in bytes. Records whose
	// message does not fit travel over streams. Default 1400 (below a 1500
	// MTU with room for IP, UDP and encryption headers).
	PacketSize int
	// StreamFanout is the number of random members a record too large for a
	// packet is pushed to by its owner, and forwarded to by each member that
	// receives a new version. Default 3.
	StreamFanout int
	// PullDelay is how long a node that learned of a newer record version
	// (through node meta) waits for the record to arrive by gossip before it
	// asks the owner for it. Default 500ms.
	PullDelay time.Duration
	// QueryTimeout bounds a cluster-wide keyring operation. Default 10s.
	QueryTimeout time.Duration
}

// DefaultLANConfig returns the production profile, tuned for a LAN of 3 to a
// few hundred agents. Its goals: a crashed agent is seen as failed by every
// member within about 3 s at 50 members; a live agent that stalls for 2 s
// (SIGSTOP, a long GC or VM pause) is never declared dead, even in a cluster
// of 3; idle gossip stays under 20 KB/s per node.
//
// The two goals pull memberlist's suspicion timeout,
// SuspicionMult * max(1, log10(n)) * ProbeInterval, in opposite directions:
// at 3 members it must exceed the 2 s stall, and at 50 members it is 1.7
// times longer, which alone would exceed 3 s. No single setting meets both,
// so the timers are set for safety (a 3 s window at 3 members, about 5 s at
// 50) and crashes are caught by the down evidence described in the package
// comment: a failed probe plus a refused TCP connection marks a node failed
// after about one probe interval, without waiting for the timer.
//
// A third goal sets the join timers: after any fault ends (every server
// restarted, a partition healed, a node restarted during an outage), every
// catalog is whole again within 10 s. A join that reaches one member
// exchanges full state at once (push/pull) and the news then spreads in
// well under a second, so the budget goes to finding someone to join.
func DefaultLANConfig() Config {
	return Config{
		BindAddr: "0.0.0.0",
		BindPort: DefaultPort,
		// The first attempt is at once, the second 1 s later: agents often
		// start together.
		RetryJoinInterval: time.Second,
		// Out of contact (no live peer, or no live server while servers are
		// known), a node tries every RetryJoin address and a few remembered
		// peers at least every 5 s (±25%): servers back from an outage are
		// found within about 6 s, with time left for the catalog to spread.
		// Each attempt is one TCP dial per address: cheap, even for hours.
		// (30 s, the earlier value, alone exceeded the 10 s goal.)
		RetryJoinMax: 5 * time.Second,
		// In contact, each node tries one gone member every 2 s (±25%): a
		// member that comes back, or the far side of a healed partition, is
		// reached within about 2 s by whichever node tries first, and both
		// sides try. Stretched above 32 members (see reconnectInterval), so
		// that a large cluster does not dial a dead host hundreds of times a
		// second. (10 s, the earlier value, alone took the whole budget.)
		ReconnectInterval: 2 * time.Second,
		ReconnectTimeout:  72 * time.Hour, // as serf: a failed host may come back after a weekend
		// Serf never reconnects a member that left. Here a graceful leave is
		// most often a restart (an upgrade, a reboot; SIGTERM leaves), and
		// such a member must be found again even when its own way back fails
		// (a wiped data dir, every RetryJoin target down): 30 min covers a
		// bare-metal reboot with a slow firmware. A member away longer was
		// decommissioned, or finds the cluster itself when it returns.
		LeftReconnectTimeout: 30 * time.Minute,
		TombstoneTimeout:     24 * time.Hour, // as serf: show who left for a day

		// Every member probes one member per interval, so a given member
		// is probed about once per interval by someone; the first probe of a
		// crashed node comes within 4.6 intervals (p99, 50 members).
		ProbeInterval: 300 * time.Millisecond,
		// LAN round trips are well under 1 ms; 150 ms absorbs scheduling
		// and GC delays on a busy host, and leaves half the interval for
		// indirect probes and the TCP fallback.
		ProbeTimeout:   150 * time.Millisecond,
		IndirectChecks: 3, // memberlist's LAN value: three witnesses
		// At 3 members Lifeguard has no one to confirm a suspicion (it needs
		// SuspicionMult-2 confirmations), so the timeout is its minimum,
		// 10 * 1 * 300ms = 3 s after the failed probe, about 3.3 s of silence
		// in all: a 2 s stall is refuted with more than 1 s to spare. At 50
		// members it is 10 * 1.7 * 300ms = 5.1 s, reached once 8 members
		// confirmed, which takes about as long.
		SuspicionMult: 10,
		// An isolated node, which gets no confirmations, waits up to 4 times
		// longer (20 s at 50 members) before declaring others dead.
		SuspicionMaxTimeoutMult: 4,
		AwarenessMaxMultiplier:  8, // memberlist's value: back off to 2.4 s when degraded
		// Gossip rounds only send when something is queued, so a short
		// interval costs nothing at rest and brings a change to every member
		// of 50 in a few rounds (fanout 3 plus piggybacking on probes).
		GossipInterval:      100 * time.Millisecond,
		GossipNodes:         3,
		GossipToTheDeadTime: 15 * time.Second, // long enough to refute after a stall or partition
		RetransmitMult:      4,                // memberlist's LAN value: 8 sends per message at 50 members
		// Full state sync every 15 s (30 s above 32 members, 45 s above
		// 64): anti-entropy for anything gossip lost, about 1 KB/s per node
		// at 50 members with small records.
		PushPullInterval:    15 * time.Second,
		TCPTimeout:          5 * time.Second,
		DeadNodeReclaimTime: 30 * time.Second, // a rebuilt host may reuse its name after 30 s
		DisableTCPPings:     false,
		EnableCompression:   false, // LZW per packet was a fifth of the CPU of a busy 50-agent run
		PacketSize:          1400,
		StreamFanout:        3,                      // each large record reaches ~95% of members by push, the rest pull
		PullDelay:           500 * time.Millisecond, // ~5 gossip rounds: broadcasts normally arrive first
		QueryTimeout:        10 * time.Second,
	}
}

// FastTestConfig returns a profile for in-process clusters in tests, where
// every member shares the host's CPUs and the race detector: timers about
// three times shorter than DefaultLANConfig, but a suspicion window (about
// 1 s at 3 to 10 members) that a test machine under load does not cross, so
// that tests asserting "never failed" stay reliable. It binds 127.0.0.1 on a
// port the kernel picks.
func FastTestConfig(name string) Config {
	c := DefaultLANConfig()
	c.NodeName = name
	c.BindAddr = "127.0.0.1"
	c.BindPort = 0
	c.RetryJoinInterval = 50 * time.Millisecond
	c.RetryJoinMax = 500 * time.Millisecond
	c.ReconnectInterval = 200 * time.Millisecond
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.SuspicionMult = 10
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 20 * time.Millisecond
	c.GossipToTheDeadTime = 2 * time.Second
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
	c.DeadNodeReclaimTime = time.Second
	c.PullDelay = 100 * time.Millisecond
	c.QueryTimeout = 5 * time.Second
	return c
}

// Validate checks every field and names the first wrong one with its value.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.NodeName == "" {
		return bad("NodeName is empty")
	}
	if err := validName(c.NodeName); err != nil {
		return bad("NodeName %q: %v", c.NodeName, err)
	}
	if _, err := netip.ParseAddr(c.BindAddr); err != nil {
		return bad("BindAddr %q is not an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return bad("BindPort %d is out of range 0-65535", c.BindPort)
	}
	if c.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			return bad("AdvertiseAddr %q is not an IP address", c.AdvertiseAddr)
		}
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return bad("AdvertisePort %d is out of range 0-65535", c.AdvertisePort)
	}
	for i, k := range c.Keyring {
		if _, err := ParseKey(k); err != nil {
			return bad("Keyring[%d]: %v", i, err)
		}
	}
	for i, a := range c.RetryJoin {
		if _, err := joinAddr(a); err != nil {
			return bad("RetryJoin[%d] %q: %v", i, a, err)
		}
	}
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"RetryJoinInterval", c.RetryJoinInterval},
		{"RetryJoinMax", c.RetryJoinMax},
		{"ReconnectInterval", c.ReconnectInterval},
		{"ReconnectTimeout", c.ReconnectTimeout},
		{"LeftReconnectTimeout", c.LeftReconnectTimeout},
		{"TombstoneTimeout", c.TombstoneTimeout},
		{"ProbeInterval", c.ProbeInterval},
		{"ProbeTimeout", c.ProbeTimeout},
		{"GossipInterval", c.GossipInterval},
		{"GossipToTheDeadTime", c.GossipToTheDeadTime},
		{"PushPullInterval", c.PushPullInterval},
		{"TCPTimeout", c.TCPTimeout},
		{"PullDelay", c.PullDelay},
		{"QueryTimeout", c.QueryTimeout},
	}
	for _, d := range durations {
		if d.v <= 0 {
			return bad("%s %s must be positive", d.name, d.v)
		}
	}
	if c.DeadNodeReclaimTime < 0 {
		return bad("DeadNodeReclaimTime %s must not be negative", c.DeadNodeReclaimTime)
	}
	if c.RetryJoinMax < c.RetryJoinInterval {
		return bad("RetryJoinMax %s is below RetryJoinInterval %s", c.RetryJoinMax, c.RetryJoinInterval)
	}
	if c.LeftReconnectTimeout > c.TombstoneTimeout {
		return bad("LeftReconnectTimeout %s is above TombstoneTimeout %s (a left member is forgotten then)", c.LeftReconnectTimeout, c.TombstoneTimeout)
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return bad("ProbeTimeout %s must be below ProbeInterval %s", c.ProbeTimeout, c.ProbeInterval)
	}
	ints := []struct {
		name string
		v    int
		min  int
	}{
		{"IndirectChecks", c.IndirectChecks, 0},
		{"SuspicionMult", c.SuspicionMult, 1},
		{"SuspicionMaxTimeoutMult", c.SuspicionMaxTimeoutMult, 1},
		{"AwarenessMaxMultiplier", c.AwarenessMaxMultiplier, 1},
		{"GossipNodes", c.GossipNodes, 1},
		{"RetransmitMult", c.RetransmitMult, 1},
		{"StreamFanout", c.StreamFanout, 1},
	}
	for _, n := range ints {
		if n.v < n.min {
			return bad("%s %d must be at least %d", n.name, n.v, n.min)
		}
	}
	if c.PacketSize < 512 || c.PacketSize > 65000 {
		return bad("PacketSize %d is out of range 512-65000", c.PacketSize)
	}
	return nil
}

// validName checks a node name: it becomes a DNS label and a log field.
func validName(name string) error {
	if len(name) > 128 {
		return fmt.Errorf("longer than 128 bytes")
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f || r == '/' {
			return fmt.Errorf("contains %q", r)
		}
	}
	return nil
}

// joinAddr normalises a retry-join address to host:port.
func joinAddr(a string) (string, error) {
	if a == "" {
		return "", fmt.Errorf("empty address")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		// No port: a bare host or IP (an IPv6 literal may come bracketed).
		host = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if strings.ContainsAny(host, "[]") {
			return "", fmt.Errorf("malformed host")
		}
		return net.JoinHostPort(host, strconv.Itoa(DefaultPort)), nil
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("port %q is not a number in 1-65535", port)
	}
	if host == "" {
		return "", fmt.Errorf("empty host")
	}
	return a, nil
}
