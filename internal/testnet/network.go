// Package testnet is the in-process network twin every multi-node test runs
// on. One Network carries all three planes of each node: its gossip
// transport (memberlist), its Raft server port (a listener and a dialer)
// and its tunnel socket (a net.PacketConn that quic-go runs on). A fault set
// on the network (a partition, a delay, a loss rate) therefore acts on every
// plane at once, as a real link failure does.
//
// The network knows two kinds of traffic, as IP does. Datagrams (PacketConn)
// may be lost, delayed and reordered. Streams (Listen, Dial) are reliable
// and ordered; a delay slows each write, and a cut link refuses new streams
// by a dial timeout and breaks the established ones.
//
// Each node is a Host with its own address (127.0.i.j, never bound on the
// machine: nothing here opens a socket), stable across restarts, so that a
// node that comes back is found where it was. Every random choice comes from
// one source seeded by Options.Seed, so that a run can be repeated.
package testnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Link is the state of the traffic from one host to another: the zero Link
// is a healthy one.
type Link struct {
	// Cut drops every datagram, refuses new streams (the dial times out)
	// and breaks established streams, as a lost route does.
	Cut bool
	// Reject, with Cut, makes a dial across the link fail at once with
	// EHOSTUNREACH, as a firewall that rejects does, instead of hanging
	// until its deadline as a dropped SYN does.
	Reject bool
	// Drop is the probability, from 0 to 1, that a datagram is lost.
	// Streams are not affected: TCP retransmits.
	Drop float64
	// Delay is added to every datagram and to every stream write.
	Delay time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) to each datagram,
	// which reorders them.
	Jitter time.Duration
}

// Options configure a Network.
type Options struct {
	// Seed seeds the source of every random choice (loss, jitter).
	// Default 1.
	Seed uint64
	// QueueLen is how many datagrams a PacketConn holds unread before it
	// drops more, as a full socket buffer does. Default 4096.
	QueueLen int
}

// Network is the twin: hosts, their sockets, and the state of every link.
// It is safe for concurrent use.
type Network struct {
	opts Options

	mu      sync.Mutex
	rng     *rand.Rand
	hosts   map[string]*Host
	byIP    map[netip.Addr]*Host
	links   map[[2]string]Link // from, to -> state; absent = healthy
	streams map[*streamConn]struct{}
	stats   Stats
	closed  chan struct{}
	once    sync.Once
}

// Stats counts what the network did to datagrams, for assertions that a
// fault acted.
type Stats struct {
	// Delivered datagrams reached a socket's queue.
	Delivered uint64
	// Lost datagrams were dropped by a cut link or a loss rate.
	Lost uint64
	// Unreachable datagrams had no socket at their address.
	Unreachable uint64
	// Overflowed datagrams met a full queue.
	Overflowed uint64
}

// ErrClosed is returned by operations on a closed socket or network.
var ErrClosed = net.ErrClosed

// New returns an empty network. Close it at the end of the test.
func New(opts Options) *Network {
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	return &Network{
		opts:    opts,
		rng:     rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		hosts:   make(map[string]*Host),
		byIP:    make(map[netip.Addr]*Host),
		links:   make(map[[2]string]Link),
		streams: make(map[*streamConn]struct{}),
		closed:  make(chan struct{}),
	}
}

// Close ends pending dials and waits; sockets stay with their owners, who
// close them.
func (n *Network) Close() { n.once.Do(func() { close(n.closed) }) }

// Host returns the host called name, adding it at the next free address
// the first time.
func (n *Network) Host(name string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h, ok := n.hosts[name]; ok {
		return h
	}
	i := len(n.hosts) + 1
	ip := netip.AddrFrom4([4]byte{127, 0, byte(1 + i/250), byte(1 + i%250)})
	h := &Host{
		n:       n,
		name:    name,
		ip:      ip,
		packets: make(map[uint16]*PacketConn),
		streams: make(map[uint16]*listener),
	}
	n.hosts[name] = h
	n.byIP[ip] = h
	return h
}

// Hosts returns the names of every host, in no order.
func (n *Network) Hosts() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.hosts))
	for name := range n.hosts {
		out = append(out, name)
	}
	return out
}

// SetLink sets the state of the traffic from -> to (one direction).
func (n *Network) SetLink(from, to string, l Link) {
	n.mu.Lock()
	if l == (Link{}) {
		delete(n.links, [2]string{from, to})
	} else {
		n.links[[2]string{from, to}] = l
	}
	broken := n.brokenStreamsLocked()
	n.mu.Unlock()
	closeAll(broken)
}

// LinkOf returns the state of the traffic from -> to.
func (n *Network) LinkOf(from, to string) Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.links[[2]string{from, to}]
}

// Partition cuts every link between a host of a and a host of b, both
// ways, on every plane. Partitions add up until Heal.
func (n *Network) Partition(a, b []string) {
	n.update(a, b, func(l *Link) { l.Cut = true })
}

// Isolate cuts name from every other host the network has now.
func (n *Network) Isolate(name string) {
	var others []string
	for _, h := range n.Hosts() {
		if h != name {
			others = append(others, h)
		}
	}
	n.Partition([]string{name}, others)
}

// DropPackets loses every datagram between a host of a and a host of b,
// both ways, and lets streams through, as a firewall that blocks UDP does.
func (n *Network) DropPackets(a, b []string) {
	n.update(a, b, func(l *Link) { l.Drop = 1 })
}

// Heal makes every link healthy again.
func (n *Network) Heal() {
	n.mu.Lock()
	n.links = make(map[[2]string]Link)
	n.mu.Unlock()
}

// Stats returns what the network did to datagrams so far.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

func (n *Network) update(a, b []string, edit func(*Link)) {
	n.mu.Lock()
	for _, x := range a {
		for _, y := range b {
			for _, k := range [][2]string{{x, y}, {y, x}} {
				l := n.links[k]
				edit(&l)
				n.links[k] = l
			}
		}
	}
	broken := n.brokenStreamsLocked()
	n.mu.Unlock()
	closeAll(broken)
}

// rejectsLocked reports whether a dial between a and b is rejected at
// once (Link.Reject on a cut link, either way).
func (n *Network) rejectsLocked(a, b string) bool {
	l, r := n.links[[2]string{a, b}], n.links[[2]string{b, a}]
	return (l.Cut && l.Reject) || (r.Cut && r.Reject)
}

// reachableLocked reports whether a stream may run between a and b: it
// needs both directions.
func (n *Network) reachableLocked(a, b string) bool {
	return !n.links[[2]string{a, b}].Cut && !n.links[[2]string{b, a}].Cut
}

// brokenStreamsLocked takes the streams that cross a cut link out of the
// set, for the caller to close outside the lock.
func (n *Network) brokenStreamsLocked() []*streamConn {
	var out []*streamConn
	for c := range n.streams {
		if !n.reachableLocked(c.from, c.to) {
			out = append(out, c)
			delete(n.streams, c)
		}
	}
	return out
}

func closeAll(cs []*streamConn) {
	for _, c := range cs {
		c.breakLink()
	}
}

// hostAt returns the host that owns addr's IP, nil if none.
func (n *Network) hostAt(ip netip.Addr) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byIP[ip.Unmap()]
}

// fate decides what happens to one datagram from -> to: lost, or delivered
// after delay.
func (n *Network) fate(from, to string) (lost bool, delay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.links[[2]string{from, to}]
	if l.Cut || (l.Drop > 0 && n.rng.Float64() < l.Drop) {
		n.stats.Lost++
		return true, 0
	}
	delay = l.Delay
	if l.Jitter > 0 {
		delay += time.Duration(n.rng.Int64N(int64(l.Jitter)))
	}
	return false, delay
}

func (n *Network) count(f func(*Stats)) {
	n.mu.Lock()
	f(&n.stats)
	n.mu.Unlock()
}

// Host is one node's place on the network: its address, and the sockets it
// opened there.
type Host struct {
	n    *Network
	name string
	ip   netip.Addr

	mu      sync.Mutex
	packets map[uint16]*PacketConn
	streams map[uint16]*listener
	// nextEphemeral numbers the source ports of the streams it dials.
	nextEphemeral uint16
}

// Name is the host's name.
func (h *Host) Name() string { return h.name }

// IP is the host's address.
func (h *Host) IP() netip.Addr { return h.ip }

// Addr returns host:port at the host's address.
func (h *Host) Addr(port int) string {
	return netip.AddrPortFrom(h.ip, uint16(port)).String()
}

// ErrPortInUse is returned when a host opens a port it already has open.
var ErrPortInUse = errors.New("testnet: port in use")

// errTimeout is a dial across a cut link, as a dial to a silent host ends.
type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout (link cut by testnet)" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

func parseAddr(addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("testnet: address %q: %w", addr, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
