package udpgro

import (
	"encoding/binary"
	"net"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/meshwork/meshwork/transport/rawio"
)

const (
	// batch is how many messages one recvmmsg asks for, as quic-go does,
	// when raw calls are off (a raw read takes one message).
	batch = 8
	// maxMessage holds the largest run the kernel coalesces: 64 segments,
	// at most 64 KiB in all.
	maxMessage = 64 << 10
	oobSize    = 128
)

// Conn is a UDP socket with UDP_GRO on. Its ReadBatch splits each
// coalesced message back into the datagrams that made it up. It reads and
// writes with raw calls (package rawio) unless they are off. Everything
// else is the socket's own.
type Conn struct {
	*net.UDPConn
	pc  *ipv4.PacketConn
	raw *rawio.UDP // nil: the socket's own calls

	msgs []ipv4.Message // the last batch read from the socket
	segs []int          // segment size of each message in msgs
	n    int            // messages in the last batch
	next int            // first message not yet fully handed out
	off  int            // bytes of msgs[next] already handed out

	// reads and datagrams count the socket reads' messages and the
	// datagrams handed out; more datagrams than messages means the kernel
	// coalesced. Atomic: read while quic-go reads the socket.
	reads, datagrams atomic.Uint64
}

func wrap(pc net.PacketConn) (net.PacketConn, bool) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return pc, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return pc, false
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return pc, false
	}
	c := &Conn{UDPConn: uc, pc: ipv4.NewPacketConn(uc), msgs: make([]ipv4.Message, batch), segs: make([]int, batch)}
	c.raw, _ = rawio.NewUDP(uc)
	for i := range c.msgs {
		c.msgs[i].Buffers = [][]byte{make([]byte, maxMessage)}
		c.msgs[i].OOB = make([]byte, oobSize)
	}
	return c, true
}

// ReadBatch fills ms with single datagrams: what is left of the last batch
// read from the socket, or else a new batch, read blocking. quic-go calls
// it from one goroutine; each of ms must have one buffer, and datagrams
// longer than it are cut short, as a plain read would cut them.
func (c *Conn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	if c.next >= c.n {
		n, err := c.readSocket(flags)
		if n == 0 || err != nil {
			return 0, err
		}
		for i := range n {
			c.segs[i] = takeSegmentSize(&c.msgs[i])
		}
		c.n, c.next, c.off = n, 0, 0
		c.reads.Add(uint64(n))
	}
	out := 0
	for out < len(ms) && c.next < c.n {
		m := &c.msgs[c.next]
		end := min(c.off+c.segs[c.next], m.N)
		d := &ms[out]
		d.N = copy(d.Buffers[0], m.Buffers[0][c.off:end])
		d.NN = copy(d.OOB, m.OOB[:m.NN])
		d.Addr, d.Flags = m.Addr, m.Flags
		out++
		if c.off = end; c.off >= m.N {
			c.next, c.off = c.next+1, 0
		}
	}
	c.datagrams.Add(uint64(out))
	return out, nil
}

// readSocket reads a batch into c.msgs: one message at a time with raw
// calls (each of which holds up to 64 coalesced datagrams), or else as
// many as recvmmsg gives.
func (c *Conn) readSocket(flags int) (int, error) {
	if c.raw == nil {
		return c.pc.ReadBatch(c.msgs, flags)
	}
	if err := c.raw.Read(&c.msgs[0], flags); err != nil {
		return 0, err
	}
	return 1, nil
}

// WriteMsgUDP sends b with the control messages oob (quic-go's GSO segment
// size and ECN) to addr.
func (c *Conn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	if c.raw != nil {
		if n, oobn, ok, err := c.raw.Write(b, oob, addr); ok {
			return n, oobn, err
		}
	}
	return c.UDPConn.WriteMsgUDP(b, oob, addr)
}

// takeSegmentSize removes the UDP_GRO control message from m's control
// messages and returns the segment size it gives, or m.N for a message
// that is one datagram (an empty one is handed out once). The other
// control messages (ECN, packet info) apply to every segment and stay.
func takeSegmentSize(m *ipv4.Message) int {
	seg := m.N
	oob, kept := m.OOB[:m.NN], 0
	for len(oob) > 0 {
		hdr, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		whole := oob[:len(oob)-len(rest)]
		if hdr.Level == unix.SOL_UDP && hdr.Type == unix.UDP_GRO && len(body) >= 4 {
			if s := int(int32(binary.NativeEndian.Uint32(body))); s > 0 {
				seg = s
			}
		} else {
			kept += copy(m.OOB[kept:], whole)
		}
		oob = rest
	}
	m.NN = kept
	return seg
}
