package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TCPConn is a TCP connection read and written with raw calls. Everything
// else (deadlines, half-close, linger, close) is the net package's: the
// calls wait through the same poller, so a deadline or a close ends a wait.
//
// Each direction keeps its own state under its own lock, as goroutines may
// read and write at once, and its callback is made once, so that a call
// allocates nothing.
type TCPConn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu   sync.Mutex
	rbuf  []byte
	rn    uintptr
	rerr  syscall.Errno
	rfunc func(fd uintptr) bool

	wmu   sync.Mutex
	wbuf  []byte
	wdone int
	werr  syscall.Errno
	wfunc func(fd uintptr) bool
}

// WrapTCP returns c read and written with raw calls, or c itself when raw
// calls are off or its raw connection is unavailable.
func WrapTCP(c *net.TCPConn) net.Conn {
	if !Enabled {
		return c
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	t := &TCPConn{TCPConn: c, rc: rc}
	t.rfunc, t.wfunc = t.read, t.write
	return t
}

func (c *TCPConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.rfunc)
	c.rbuf = nil
	if err := c.failure("read", err, c.rerr); err != nil {
		return 0, err
	}
	if c.rn == 0 {
		return 0, io.EOF
	}
	return int(c.rn), nil
}

// read is one attempt; false means "wait until readable and call again".
func (c *TCPConn) read(fd uintptr) bool {
	for {
		c.rn, _, c.rerr = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		if c.rerr != unix.EINTR {
			return c.rerr != unix.EAGAIN
		}
	}
}

func (c *TCPConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wdone, c.werr = p, 0, 0
	err := c.rc.Write(c.wfunc)
	c.wbuf = nil
	return c.wdone, c.failure("write", err, c.werr)
}

// write writes what is left of wbuf; false means "wait until writable and
// call again".
func (c *TCPConn) write(fd uintptr) bool {
	for c.wdone < len(c.wbuf) {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wdone])), uintptr(len(c.wbuf)-c.wdone))
		switch e {
		case 0:
			c.wdone += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// failure is the error of a read or write, as the net package gives it:
// the wait's error (a deadline, a close), else the call's errno, else nil.
func (c *TCPConn) failure(op string, err error, errno syscall.Errno) error {
	if err == nil && errno != 0 {
		err = os.NewSyscallError(op, errno)
	}
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
