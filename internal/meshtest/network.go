package meshtest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/internal/testnet"
)

// Network is a fabric that gossip transports are created on, with fault
// injection. Faults are applied by the sender: a packet or a connection from
// a node to a node it is partitioned from vanishes (packets are dropped,
// dials time out), as on a network that lost a link. Implementations are
// safe for concurrent use.
type Network interface {
	// NewTransport returns a transport for the node called name, listening
	// at once. Its address is Addr(name).
	NewTransport(name string) (memberlist.NodeAwareTransport, error)
	// Addr is the host:port of name's current transport, "" if none.
	Addr(name string) string
	// Partition cuts every link between a node of a and a node of b, both
	// ways. Partitions add up until Heal.
	Partition(a, b []string)
	// DropPackets drops the packets (UDP) between a and b, both ways, and
	// lets streams (TCP) through, as a firewall that blocks UDP does.
	DropPackets(a, b []string)
	// Heal removes every partition and packet filter.
	Heal()
}

// faults holds the cut links and the links that drop packets, by pair of
// node names.
type faults struct {
	mu        sync.RWMutex
	cut       map[[2]string]bool
	noPackets map[[2]string]bool
}

func addPairs(m map[[2]string]bool, a, b []string) map[[2]string]bool {
	if m == nil {
		m = make(map[[2]string]bool)
	}
	for _, x := range a {
		for _, y := range b {
			m[[2]string{x, y}] = true
			m[[2]string{y, x}] = true
		}
	}
	return m
}

func (f *faults) partition(a, b []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = addPairs(f.cut, a, b)
}

func (f *faults) dropPackets(a, b []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noPackets = addPairs(f.noPackets, a, b)
}

func (f *faults) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = nil
	f.noPackets = nil
}

// blocked reports whether the link from -> to is cut.
func (f *faults) blocked(from, to string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cut[[2]string{from, to}]
}

// packetBlocked reports whether a packet from -> to is lost.
func (f *faults) packetBlocked(from, to string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k := [2]string{from, to}
	return f.cut[k] || f.noPackets[k]
}

// errTimeout is what a dial across a cut link returns after its timeout, as
// a dial to a silent host does.
type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout (link cut by meshtest)" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// waitCut blocks a dial across a cut link for its timeout (bounded, so that
// a test never hangs on it) and returns a timeout error.
func waitCut(addr string, timeout time.Duration, stop <-chan struct{}) error {
	if timeout <= 0 || timeout > 10*time.Second {
		timeout = 10 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
	return &net.OpError{Op: "dial", Net: "tcp", Addr: strAddr(addr), Err: errTimeout{}}
}

// cutConn fails reads and writes once the link it crosses is cut, as an
// established connection does when its peer becomes unreachable.
type cutConn struct {
	net.Conn
	f        *faults
	from, to string
}

var errCut = errors.New("connection lost: link cut by meshtest")

func (c *cutConn) Read(b []byte) (int, error) {
	if c.f.blocked(c.from, c.to) {
		return 0, errCut
	}
	return c.Conn.Read(b)
}

func (c *cutConn) Write(b []byte) (int, error) {
	if c.f.blocked(c.from, c.to) {
		return 0, errCut
	}
	return c.Conn.Write(b)
}

type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

// ---- loopback: real sockets ----

// LoopbackNetwork puts every transport on real UDP and TCP sockets on
// 127.0.0.1, each on a port the kernel picks the first time; a node that
// restarts gets the same port back, as an agent does. A stopped transport
// closes its sockets, so that dials to it are refused, as after a kill -9.
type LoopbackNetwork struct {
	f      faults
	mu     sync.RWMutex
	byAddr map[string]string // host:port -> node name
	byName map[string]string
	stop   chan struct{}
	once   sync.Once
}

// NewLoopbackNetwork returns an empty loopback network.
func NewLoopbackNetwork() *LoopbackNetwork {
	return &LoopbackNetwork{
		byAddr: make(map[string]string),
		byName: make(map[string]string),
		stop:   make(chan struct{}),
	}
}

// NewTransport binds 127.0.0.1 on a free port, or, for a node that had a
// transport before, on its old port. Another socket may hold that port for
// a moment (the kernel hands ports to outgoing connections from the same
// range): it tries for up to 2 s, then fails rather than move the node.
func (n *LoopbackNetwork) NewTransport(name string) (memberlist.NodeAwareTransport, error) {
	port := 0
	n.mu.RLock()
	if old, ok := n.byName[name]; ok {
		_, p, _ := net.SplitHostPort(old)
		port, _ = strconv.Atoi(p)
	}
	n.mu.RUnlock()
	var nt *gossip.NetTransport
	var err error
	for deadline := time.Now().Add(2 * time.Second); ; {
		nt, err = gossip.NewNetTransport("127.0.0.1", port, nil)
		if err == nil || port == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(50 * time.Millisecond): // a bounded retry of a bind, not a wait for a condition
		case <-n.stop:
			return nil, fmt.Errorf("meshtest: loopback transport for %s: network closed", name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("meshtest: loopback transport for %s: %w", name, err)
	}
	addr := nt.Addr()
	n.mu.Lock()
	if old, ok := n.byName[name]; ok {
		delete(n.byAddr, old)
	}
	n.byAddr[addr] = name
	n.byName[name] = addr
	n.mu.Unlock()
	return &faultTransport{NetTransport: nt, n: n, name: name}, nil
}

// Addr returns name's address.
func (n *LoopbackNetwork) Addr(name string) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.byName[name]
}

func (n *LoopbackNetwork) nameOf(addr string) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.byAddr[addr]
}

// Partition cuts the links between a and b.
func (n *LoopbackNetwork) Partition(a, b []string) { n.f.partition(a, b) }

// DropPackets drops UDP between a and b.
func (n *LoopbackNetwork) DropPackets(a, b []string) { n.f.dropPackets(a, b) }

// Heal restores every link.
func (n *LoopbackNetwork) Heal() { n.f.heal() }

// Close ends pending dials across cut links.
func (n *LoopbackNetwork) Close() { n.once.Do(func() { close(n.stop) }) }

// faultTransport is a NetTransport that drops what crosses a cut link.
type faultTransport struct {
	*gossip.NetTransport
	n    *LoopbackNetwork
	name string
}

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.n.f.packetBlocked(t.name, t.n.nameOf(a.Addr)) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	to := t.n.nameOf(a.Addr)
	if t.n.f.blocked(t.name, to) {
		return nil, waitCut(a.Addr, timeout, t.n.stop)
	}
	c, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: c, f: &t.n.f, from: t.name, to: to}, nil
}

// ---- in memory ----

// gossipPort is the port every node's gossip transport has on the twin, as
// agents use one port number everywhere.
const gossipPort = 7946

// MemNetwork puts the transports on the in-process network twin
// (internal/testnet): no socket at all. Each node name keeps its address
// across restarts; a shut-down transport's packets vanish and dials to it
// are refused (ECONNREFUSED), as after a kill -9. The same twin carries the
// Raft and tunnel sockets of whole agents (Twin), so that a partition cuts
// every plane at once.
type MemNetwork struct {
	twin *testnet.Network
}

// NewMemNetwork returns an empty in-memory network.
func NewMemNetwork() *MemNetwork { return &MemNetwork{twin: testnet.New(testnet.Options{})} }

// Twin is the network the transports run on, for the other planes of the
// nodes and for faults finer than Partition (testnet.Network.SetLink).
func (n *MemNetwork) Twin() *testnet.Network { return n.twin }

// NewTransport returns name's transport, at name's address. The previous
// transport of name, if any, must be shut down.
func (n *MemNetwork) NewTransport(name string) (memberlist.NodeAwareTransport, error) {
	t, err := n.twin.Host(name).GossipTransport(gossipPort)
	if err != nil {
		return nil, fmt.Errorf("meshtest: %w", err)
	}
	return t, nil
}

// Addr returns name's address.
func (n *MemNetwork) Addr(name string) string { return n.twin.Host(name).Addr(gossipPort) }

// Partition cuts the links between a and b.
func (n *MemNetwork) Partition(a, b []string) { n.twin.Partition(a, b) }

// DropPackets drops UDP between a and b.
func (n *MemNetwork) DropPackets(a, b []string) { n.twin.DropPackets(a, b) }

// Heal restores every link.
func (n *MemNetwork) Heal() { n.twin.Heal() }

// Close ends pending dials across cut links.
func (n *MemNetwork) Close() { n.twin.Close() }
