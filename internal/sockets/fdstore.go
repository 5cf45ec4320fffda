package sockets

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrNoNotifySocket is returned by the file descriptor store functions when
// $NOTIFY_SOCKET is unset: the process does not run under systemd.
var ErrNoNotifySocket = errors.New("sockets: NOTIFY_SOCKET is unset")

// NotifyFDStore sends one socket (a net.Listener, net.PacketConn or
// *os.File) to systemd's file descriptor store of the service, under name: sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=name",
// ...). systemd keeps it while the service restarts and hands it back in
// LISTEN_FDS; a descriptor already in the store is not stored twice. The
// unit needs FileDescriptorStoreMax= above the number of sockets, and
// systemd accepts the message only from the service's main process
// (NotifyAccess=main). notifySocket is $NOTIFY_SOCKET: a path, or an
// abstract address starting with '@'.
func NotifyFDStore(notifySocket, name string, f syscall.Conn) error {
	if err := checkName(name); err != nil {
		return err
	}
	// Not f.Fd(), which would clear O_NONBLOCK on the socket this process
	// serves.
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("sockets: store %s: %w", name, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = sendNotify(notifySocket, "FDSTORE=1\nFDNAME="+name, int(fd))
	}); err != nil {
		return fmt.Errorf("sockets: store %s: %w", name, err)
	}
	return serr
}

// NotifyFDStoreRemove asks systemd to close every descriptor of its store
// named name.
func NotifyFDStoreRemove(notifySocket, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return sendNotify(notifySocket, "FDSTOREREMOVE=1\nFDNAME="+name, -1)
}

// sendNotify sends one sd_notify datagram, with fd as SCM_RIGHTS when it is
// not -1. The socket is not connected (Go's net refuses WriteMsgUnix on a
// connected datagram socket), and the syscall package maps a leading '@' of
// the address to the abstract namespace, as systemd means it.
func sendNotify(notifySocket, state string, fd int) error {
	if notifySocket == "" {
		return ErrNoNotifySocket
	}
	// Close-on-exec set apart from socket(2), as SOCK_CLOEXEC is Linux's:
	// a process started in between would inherit an unconnected datagram
	// socket, which is harmless.
	s, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("sockets: notify %s: %w", notifySocket, err)
	}
	syscall.CloseOnExec(s)
	defer syscall.Close(s)
	var oob []byte
	if fd >= 0 {
		oob = syscall.UnixRights(fd)
	}
	to := &syscall.SockaddrUnix{Name: notifySocket}
	if err := syscall.Sendmsg(s, []byte(state), oob, to, 0); err != nil {
		return fmt.Errorf("sockets: notify %s: %w", notifySocket, err)
	}
	return nil
}

// StoreInSystemd makes systemd's file descriptor store hold exactly the open
// sockets of the set: it stores those it does not hold yet, and removes the
// names whose socket was closed (a VIP that is gone) or never claimed
// (call ReleaseUnclaimed first). Call it after start and whenever the
// listeners may have changed, such as before a stop; it sends nothing for a
// socket already stored. Without $NOTIFY_SOCKET it returns
// ErrNoNotifySocket and changes nothing.
func (s *Set) StoreInSystemd() error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return ErrNoNotifySocket
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneClosed()
	var errs []error
	for name, live := range s.live {
		if s.stored[name] == live {
			continue
		}
		var err error
		if _, held := s.stored[name]; held {
			// Another socket, or the one systemd handed over, under this
			// name: replace it rather than hold two of one name.
			err = NotifyFDStoreRemove(sock, name)
		}
		if err == nil {
			err = NotifyFDStore(sock, name, live)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("store %s: %w", name, err))
			continue
		}
		s.stored[name] = live
		s.keep(name, live)
	}
	for name := range s.stored {
		if _, open := s.live[name]; open {
			continue
		}
		if _, waiting := s.inherited[name]; waiting {
			continue
		}
		if err := NotifyFDStoreRemove(sock, name); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			continue
		}
		delete(s.stored, name)
		s.dropKept(name)
	}
	return errors.Join(errs...)
}

// keep holds a duplicate of a socket just stored under name (Set.kept).
// Without it, a socket closed and opened again is released and bound anew.
// s.mu is held.
func (s *Set) keep(name string, sock fileSocket) {
	rc, err := sock.SyscallConn()
	fd := -1
	if err == nil {
		err = rc.Control(func(raw uintptr) {
			var derr error
			fd, derr = dupCloexec(int(raw))
			if derr != nil {
				fd = -1
			}
		})
	}
	if err != nil || fd < 0 {
		s.log.Debug("stored socket not kept; reopening it will bind anew", "name", name, "err", err)
		return
	}
	s.dropKept(name)
	s.kept[name] = os.NewFile(uintptr(fd), name)
}

// HeldBySystemd reports whether systemd's file descriptor store holds every
// open socket of the set, as far as StoreInSystemd told it: then a
// connection that arrives after this process closed its listeners waits in
// the kernel's queue for the next start under systemd instead of being
// refused. It is false for a set with no open socket.
func (s *Set) HeldBySystemd() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneClosed()
	if len(s.live) == 0 {
		return false
	}
	for name, live := range s.live {
		if s.stored[name] != live {
			return false
		}
	}
	return true
}
