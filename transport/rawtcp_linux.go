package transport

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawTCP reads and writes a TCP connection with raw system calls, waiting
// for readiness through the runtime's poller as net.TCPConn does. A plain
// read or write tells the Go scheduler it entered a system call; when one
// lasts longer than a scheduler tick, the runtime hands the agent's only P
// to another thread, which costs two thread wake-ups. The socket is
// non-blocking, so a raw call never blocks.
type rawTCP struct {
	*net.TCPConn
	rc syscall.RawConn
}

// rawTCPConn wraps c, or returns it as it is when its raw connection is
// unavailable.
func rawTCPConn(c *net.TCPConn) net.Conn {
	if !rawIO {
		return c
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	return &rawTCP{TCPConn: c, rc: rc}
}

func (c *rawTCP) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

func (c *rawTCP) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
			switch e {
			case 0:
				done += int(n)
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return done, c.opError("write", err)
	case errno != 0:
		return done, c.opError("write", os.NewSyscallError("write", errno))
	}
	return done, nil
}

func (c *rawTCP) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

var rawIO = os.Getenv("MESHWORK_RAWIO") != "0"
