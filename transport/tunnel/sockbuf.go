package tunnel

import (
	"fmt"
	"log/slog"
	"net"
	"syscall"
)

// sizeSocketBuffers asks for size bytes of UDP receive and send buffer and
// returns what the kernel granted (as getsockopt reports it: Linux doubles
// the request for bookkeeping). Without privileges the kernel caps the
// request at net.core.rmem_max and wmem_max; as root the agent forces it
// (SO_RCVBUFFORCE, SO_SNDBUFFORCE). A shortfall is logged with the sysctl
// that fixes it: quic-go loses packets at high rates with small buffers.
func sizeSocketBuffers(pc net.PacketConn, size int, log *slog.Logger) (rcv, snd int) {
	type bufferSetter interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
		SyscallConn() (syscall.RawConn, error)
	}
	c, ok := pc.(bufferSetter)
	if !ok {
		log.Warn("tunnel socket buffers not sized: not a UDP socket", "type", fmt.Sprintf("%T", pc))
		return 0, 0
	}
	raw, err := c.SyscallConn()
	if err != nil {
		log.Warn("tunnel socket buffers not sized", "err", err)
		return 0, 0
	}
	_ = c.SetReadBuffer(size)
	_ = c.SetWriteBuffer(size)
	// Linux reports twice what it granted.
	rcv, snd = getBuf(raw, syscall.SO_RCVBUF), getBuf(raw, syscall.SO_SNDBUF)
	if rcv/bufReportFactor < size {
		forceBuf(raw, soRcvBufForce, size)
		rcv = getBuf(raw, syscall.SO_RCVBUF)
	}
	if snd/bufReportFactor < size {
		forceBuf(raw, soSndBufForce, size)
		snd = getBuf(raw, syscall.SO_SNDBUF)
	}
	if rcv/bufReportFactor < size || snd/bufReportFactor < size {
		log.Warn("tunnel socket buffers smaller than asked; raise the sysctls",
			"want", size, "receive", rcv/bufReportFactor, "send", snd/bufReportFactor,
			"sysctl", "net.core.rmem_max="+itoa(size)+" net.core.wmem_max="+itoa(size))
	}
	return rcv, snd
}

func getBuf(raw syscall.RawConn, opt int) int {
	var v int
	var err error
	if cerr := raw.Control(func(fd uintptr) {
		v, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, opt)
	}); cerr != nil || err != nil {
		return 0
	}
	return v
}

func forceBuf(raw syscall.RawConn, opt, size int) {
	if opt == 0 {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, size)
	})
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
