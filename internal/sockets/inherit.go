package sockets

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
)

// The environment of a process started by a handoff (StartSuccessor).
const (
	// HandoffFDsEnv names the sockets passed from descriptor 3 on,
	// separated by ':', as LISTEN_FDNAMES does.
	HandoffFDsEnv = "MESHWORK_HANDOFF_FDS"
	// HandoffReadyEnv is the descriptor of the pipe on which the successor
	// tells its predecessor that it is prepared (AwaitStart) and then ready
	// (SignalReady).
	HandoffReadyEnv = "MESHWORK_HANDOFF_READY_FD"
	// HandoffGoEnv is the descriptor of the pipe on which the predecessor
	// lets the successor start (Successor.Start).
	HandoffGoEnv = "MESHWORK_HANDOFF_GO_FD"
	// HandoffConnsEnv is the descriptor of the SOCK_SEQPACKET unix socket
	// on which the predecessor sends established connections
	// (Successor.SendConns): one message per connection, its name and meta
	// in the body and its socket as SCM_RIGHTS. The predecessor closes its
	// side before it lets the successor start.
	HandoffConnsEnv = "MESHWORK_HANDOFF_CONNS_FD"
)

// firstFD is the first descriptor after stdin, stdout and stderr, where both
// systemd (SD_LISTEN_FDS_START) and a handoff put the sockets.
const firstFD = 3

// ErrBadHandoff is returned by Inherit when the handoff environment does not
// describe descriptors this process holds.
var ErrBadHandoff = errors.New("sockets: invalid handoff environment")

// Inherit returns a Set holding the sockets handed to this process: by
// systemd (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, from the unit's file
// descriptor store or socket units) and by a predecessor (HandoffFDsEnv).
// Established connections, the "conn-*" sockets from systemd and those a
// predecessor sends on HandoffConnsEnv, which Inherit starts reading at
// once, are kept apart for TakeConns: they are never listeners.
// It removes those variables from the environment, so that a process this
// one starts does not take the descriptors for its own, and marks the
// descriptors close-on-exec. With neither, the Set is empty and behaves as
// New's.
func Inherit(logger *slog.Logger) (*Set, error) {
	s := New(logger)
	// Read before activation.Files unsets them: they tell where fds come from.
	handoffNames, handoff := os.LookupEnv(HandoffFDsEnv)
	readyEnv, hasReady := os.LookupEnv(HandoffReadyEnv)
	goEnv, hasGo := os.LookupEnv(HandoffGoEnv)
	connsEnv, hasConns := os.LookupEnv(HandoffConnsEnv)
	os.Unsetenv(HandoffFDsEnv)
	os.Unsetenv(HandoffReadyEnv)
	os.Unsetenv(HandoffGoEnv)
	os.Unsetenv(HandoffConnsEnv)

	files := activation.Files(true)
	if len(files) > 0 {
		s.fromSystemd = true
		for _, f := range files {
			s.add(f.Name(), f, "systemd")
		}
	}
	if handoff && len(files) == 0 {
		if err := s.addHandoff(handoffNames); err != nil {
			return nil, err
		}
	}
	if hasReady != hasGo {
		return nil, fmt.Errorf("%w: %s and %s come together", ErrBadHandoff, HandoffReadyEnv, HandoffGoEnv)
	}
	if hasReady {
		var err error
		if s.readyW, err = pipeFD(HandoffReadyEnv, readyEnv); err != nil {
			return nil, err
		}
		if s.goR, err = pipeFD(HandoffGoEnv, goEnv); err != nil {
			return nil, err
		}
	}
	if hasConns {
		sock, err := connsFD(connsEnv)
		if err != nil {
			return nil, err
		}
		s.connsIn = receiveConns(s.log, sock)
	}
	return s, nil
}

// connsFD takes the socket of HandoffConnsEnv: a SOCK_SEQPACKET socket,
// made non-blocking so that TakeConns can stop its reader.
func connsFD(value string) (*os.File, error) {
	fd, err := strconv.Atoi(value)
	if err != nil || fd < firstFD || !isOpen(fd) {
		return nil, fmt.Errorf("%w: %s=%q is not an open descriptor", ErrBadHandoff, HandoffConnsEnv, value)
	}
	if typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || typ != syscall.SOCK_SEQPACKET {
		return nil, fmt.Errorf("%w: %s=%d is not a SOCK_SEQPACKET socket (type %d, %v)", ErrBadHandoff, HandoffConnsEnv, fd, typ, err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadHandoff, HandoffConnsEnv, err)
	}
	return os.NewFile(uintptr(fd), HandoffConnsEnv), nil
}

// pipeFD takes the handoff pipe descriptor named by the variable env.
func pipeFD(env, value string) (*os.File, error) {
	fd, err := strconv.Atoi(value)
	if err != nil || fd < firstFD || !isOpen(fd) {
		return nil, fmt.Errorf("%w: %s=%q is not an open descriptor", ErrBadHandoff, env, value)
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), env), nil
}

// addHandoff takes the descriptors a predecessor passed, named by names.
func (s *Set) addHandoff(names string) error {
	if names == "" {
		return nil
	}
	list := strings.Split(names, ":")
	for i := range list {
		fd := firstFD + i
		if !isOpen(fd) {
			return fmt.Errorf("%w: %s names %d sockets but descriptor %d is not open", ErrBadHandoff, HandoffFDsEnv, len(list), fd)
		}
	}
	for i, name := range list {
		fd := firstFD + i
		syscall.CloseOnExec(fd)
		s.add(name, os.NewFile(uintptr(fd), name), "handoff")
	}
	return nil
}

// add records one inherited socket; a second one of the same name, or one
// with a name the Set would never ask for, is closed. A "conn-*" socket is
// an established connection, kept apart (addStoredConn).
func (s *Set) add(name string, f *os.File, from string) {
	if strings.HasPrefix(name, connFDPrefix) {
		s.addStoredConn(name, f, from)
		return
	}
	if err := checkName(name); err != nil {
		s.log.Warn("inherited socket has an invalid name; closing it", "from", from, "err", err)
		f.Close()
		return
	}
	if _, dup := s.inherited[name]; dup {
		s.log.Warn("two inherited sockets have the same name; closing the second", "from", from, "name", name)
		f.Close()
		return
	}
	s.inherited[name] = f
	if from == "systemd" {
		s.stored[name] = nil // in the store, not yet claimed (fdstore.go)
	}
	s.log.Debug("socket handed to the process", "from", from, "name", name)
}

// isOpen reports whether fd is an open descriptor of this process.
func isOpen(fd int) bool {
	_, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	return errno == 0
}

// InheritedFromSystemd reports whether the process was handed its sockets
// by systemd (LISTEN_FDS), from the unit's file descriptor store.
func (s *Set) InheritedFromSystemd() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fromSystemd
}
