// Package sockets gives the agent its listening sockets by name, so that they
// outlive the process: a socket handed to the process under a name, by
// systemd (LISTEN_FDS, from the unit's file descriptor store) or by the agent
// that re-executed this one (HandoffFDsEnv), is reused when the agent asks
// for that name and address; otherwise a new socket is opened.
//
// The names the agent uses are "api", "dns-udp", "dns-tcp", "tunnel-udp",
// "telemetry" and, for each VIP and upstream listener, ListenerName(addr):
// "vip-<ip>_<port>". systemd refuses ':' in a name, the separator of
// LISTEN_FDNAMES, so an address is written with '_' in its place.
//
// Established TCP connections travel the same two ways, apart from the
// listeners: StoreConnsInSystemd, Successor.SendConns and TakeConns.
//
// Closing a socket the Set returned closes this process's descriptor only:
// a successor holding a duplicate, or systemd's store, keeps the socket and
// its queue of pending connections open. Connections that arrive while no
// process accepts wait in the kernel's backlog for the next one.
//
// Docs: docs/restart.md.
package sockets

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/internal/clock"
)

// ErrBadName is returned for a socket name that cannot travel in
// LISTEN_FDNAMES or HandoffFDsEnv: empty, longer than 255 bytes, or with a
// ':', a space or a character outside printable ASCII; a listener's name
// starting with "conn-"; a held connection's name outside 1 to 64 of
// [A-Za-z0-9_-].
var ErrBadName = errors.New("sockets: invalid socket name")

// fileSocket is what every socket the Set hands out is: a net.Listener or
// net.PacketConn that can give a duplicate of its descriptor.
type fileSocket interface {
	File() (*os.File, error)
	SyscallConn() (syscall.RawConn, error)
}

// isClosed reports whether this process closed sock.
func isClosed(sock fileSocket) bool {
	rc, err := sock.SyscallConn()
	if err == nil {
		err = rc.Control(func(uintptr) {})
	}
	return errors.Is(err, net.ErrClosed)
}

// pruneClosed forgets the sockets handed out and closed since. s.mu is held.
func (s *Set) pruneClosed() {
	for name, sock := range s.live {
		if isClosed(sock) {
			delete(s.live, name)
		}
	}
}

// Set holds the sockets the process inherited and those it handed out. The
// zero value is not usable; use New or Inherit. Safe for concurrent use.
type Set struct {
	log *slog.Logger

	mu sync.Mutex
	// inherited are the sockets handed to the process and not yet claimed,
	// by name.
	inherited map[string]*os.File
	// live are the sockets handed out, by name; a closed one is dropped when
	// it is next looked at.
	live map[string]fileSocket
	// fromSystemd is whether the inherited sockets came from systemd's
	// store, which then still holds them under their names.
	fromSystemd bool
	// stored is what systemd's store holds, by name, as far as this process
	// told it (fdstore.go).
	stored map[string]fileSocket
	// kept are duplicates of the sockets this process stored, by name:
	// when the agent closes a listener and opens its name again at the
	// same address (a VIP whose service left the catalog and came back),
	// it gets the same socket, which systemd's store kept bound and
	// queueing, with no moment in which a connection is refused.
	kept map[string]*os.File
	// readyW and goR are this process's ends of the handoff's pipes
	// (handoff.go); nil when the process was not started by a handoff, and
	// once used.
	readyW *os.File
	goR    *os.File
	// handoverR is goR once AwaitStart has read it: AwaitHandover reads
	// the last message on it.
	handoverR *os.File
	// allClaimed, when not nil, is closed once inherited is empty.
	allClaimed chan struct{}

	// Established connections handed to the process (conns.go), kept apart
	// from the listening sockets above from the moment Inherit sees them.
	// storedConns are the "conn-*" sockets systemd passed, by descriptor
	// name; connsIn buffers those a predecessor sends (SendConns); both
	// are nil once TakeConns has taken them.
	storedConns map[string]*os.File
	connsIn     *connReceiver
	connsTaken  bool
	// clock dates the connection state file and judges its age.
	clock clock.Clock
}

// New returns a Set with no inherited sockets: every request opens a new
// socket, as the agent did before sockets outlived it.
func New(logger *slog.Logger) *Set {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Set{
		log:       logger,
		inherited: map[string]*os.File{},
		live:      map[string]fileSocket{},
		stored:    map[string]fileSocket{},
		kept:      map[string]*os.File{},
		clock:     clock.Real,
	}
}

// Inherited lists the names of the inherited sockets not yet claimed, sorted.
func (s *Set) Inherited() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.inherited))
	for n := range s.inherited {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Listener returns the stream listener named name on network ("tcp",
// "tcp4", "tcp6") and addr: the inherited one when there is one of that name
// bound to addr (any port when addr's port is 0), else a new one. An
// inherited socket of that name bound elsewhere is closed first, so that a
// changed configuration takes effect. For TCP the result is a
// *net.TCPListener.
func (s *Set) Listener(name, network, addr string) (net.Listener, error) {
	if err := checkListenerName(name); err != nil {
		return nil, err
	}
	if f := s.claim(name); f != nil {
		ln, err := net.FileListener(f)
		f.Close() // FileListener holds its own duplicate
		switch {
		case err != nil:
			s.log.Warn("inherited socket is not a listener; opening a new one", "name", name, "err", err)
		case !sameAddr(network, addr, ln.Addr()):
			s.log.Warn("inherited socket is bound elsewhere; opening a new one", "name", name, "inherited", ln.Addr().String(), "want", addr)
			ln.Close()
		default:
			s.log.Debug("socket inherited", "name", name, "addr", ln.Addr().String())
			s.raiseBacklog(name, ln)
			return ln, s.track(name, ln)
		}
	}
	if ln := s.reuseKept(name, network, addr, func(f *os.File) (fileSocket, net.Addr, error) {
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, nil, err
		}
		return ln.(fileSocket), ln.Addr(), nil
	}); ln != nil {
		l := ln.(net.Listener)
		s.raiseBacklog(name, l)
		return l, s.track(name, l)
	}
	released := s.releaseStored(name)
	ln, err := bindRetrying(released, func() (net.Listener, error) { return net.Listen(network, addr) })
	if err != nil {
		return nil, fmt.Errorf("sockets: listen %s %s (%s): %w", network, addr, name, err)
	}
	s.raiseBacklog(name, ln)
	return ln, s.track(name, ln)
}

// listenBacklog is the queue of pending connections every listener asks
// for; the kernel caps it at net.core.somaxconn (4096 by default). Go asks
// for somaxconn itself, but reads it from /proc/sys, which the unit's
// ProcSubset=pid hides: Go then falls back to 128. During a restart the
// queue holds every connection that arrives until the next agent accepts
// (500 a second for the e2e test's load): beyond the backlog the kernel
// drops the SYN, and the client retries it only after a second.
const listenBacklog = 4096

// raiseBacklog calls listen(2) again on ln, which on Linux changes the
// backlog of a listening socket: a new one, and one inherited from an agent
// that asked for less.
func (s *Set) raiseBacklog(name string, ln net.Listener) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { err = syscall.Listen(int(fd), listenBacklog) })
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		s.log.Warn("listen backlog not raised; a burst of connections during a restart may wait a second", "name", name, "err", err)
	}
}

// PacketConn is Listener for datagram sockets ("udp", "udp4", "udp6"). For
// UDP the result is a *net.UDPConn.
func (s *Set) PacketConn(name, network, addr string) (net.PacketConn, error) {
	if err := checkListenerName(name); err != nil {
		return nil, err
	}
	if f := s.claim(name); f != nil {
		pc, err := net.FilePacketConn(f)
		f.Close()
		switch {
		case err != nil:
			s.log.Warn("inherited socket is not a datagram socket; opening a new one", "name", name, "err", err)
		case !sameAddr(network, addr, pc.LocalAddr()):
			s.log.Warn("inherited socket is bound elsewhere; opening a new one", "name", name, "inherited", pc.LocalAddr().String(), "want", addr)
			pc.Close()
		default:
			s.log.Debug("socket inherited", "name", name, "addr", pc.LocalAddr().String())
			return pc, s.track(name, pc)
		}
	}
	if pc := s.reuseKept(name, network, addr, func(f *os.File) (fileSocket, net.Addr, error) {
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return nil, nil, err
		}
		return pc.(fileSocket), pc.LocalAddr(), nil
	}); pc != nil {
		p := pc.(net.PacketConn)
		return p, s.track(name, p)
	}
	released := s.releaseStored(name)
	pc, err := bindRetrying(released, func() (net.PacketConn, error) { return net.ListenPacket(network, addr) })
	if err != nil {
		return nil, fmt.Errorf("sockets: listen %s %s (%s): %w", network, addr, name, err)
	}
	return pc, s.track(name, pc)
}

// reuseKept returns the socket this process stored under name and has
// closed since, made anew from its kept duplicate by open, when it is
// bound where network and addr ask; systemd's store holds the same
// socket, so nothing is sent to it. It returns nil when there is none, or
// it is bound elsewhere: that one is then released (releaseStored).
func (s *Set) reuseKept(name, network, addr string, open func(*os.File) (fileSocket, net.Addr, error)) fileSocket {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.kept[name]
	if f == nil {
		return nil
	}
	sock, got, err := open(f) // open duplicates f; the kept copy stays
	if err == nil && sameAddr(network, addr, got) {
		s.stored[name] = sock
		s.log.Debug("socket reopened from systemd's store", "name", name, "addr", got.String())
		return sock
	}
	if err == nil {
		sock.(io.Closer).Close()
	}
	return nil
}

// releaseStored asks systemd to close the socket its store holds under
// name, which this process is about to open anew: one it closed since (a
// VIP whose service left the catalog and came back) or one it was handed
// and could not use. While systemd holds it, it stays bound, so that the
// new socket could not bind, and it queues connections that nobody
// accepts. It reports whether it asked.
func (s *Set) releaseStored(name string) bool {
	sock := os.Getenv("NOTIFY_SOCKET")
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, held := s.stored[name]; !held || sock == "" {
		return false
	}
	if err := NotifyFDStoreRemove(sock, name); err != nil {
		s.log.Warn("systemd's store keeps a socket the agent opens anew; binding may fail", "name", name, "err", err)
		return false
	}
	delete(s.stored, name)
	s.dropKept(name)
	s.log.Info("socket removed from systemd's store to be opened anew", "name", name)
	return true
}

// dropKept closes the kept duplicate of name, if any. s.mu is held.
func (s *Set) dropKept(name string) {
	if f := s.kept[name]; f != nil {
		f.Close()
		delete(s.kept, name)
	}
}

// bindWaits are the pauses between binds while systemd closes a socket it
// was asked to remove from its store, which it does when its event loop
// reads the message: within milliseconds.
var bindWaits = []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}

// bindRetrying calls bind, and when it fails with EADDRINUSE after the
// socket bound there was released from systemd's store, calls it again
// after each of bindWaits.
func bindRetrying[T any](released bool, bind func() (T, error)) (T, error) {
	sock, err := bind()
	if !released {
		return sock, err
	}
	for _, wait := range bindWaits {
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(wait)
		sock, err = bind()
	}
	return sock, err
}

// AllClaimed returns a channel closed once every inherited socket has been
// claimed or released: a successor waits for it, so that it takes over
// every listener of its predecessor before it says it is ready.
func (s *Set) AllClaimed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.allClaimed == nil {
		s.allClaimed = make(chan struct{})
		s.checkAllClaimed()
	}
	return s.allClaimed
}

// checkAllClaimed closes allClaimed when nothing is left to claim. s.mu is
// held.
func (s *Set) checkAllClaimed() {
	if len(s.inherited) != 0 || s.allClaimed == nil {
		return
	}
	select {
	case <-s.allClaimed:
	default:
		close(s.allClaimed)
	}
}

// claim takes the inherited socket of that name, or returns nil.
func (s *Set) claim(name string) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.inherited[name]
	delete(s.inherited, name)
	s.checkAllClaimed()
	return f
}

// track records a socket handed out, so that a handoff passes it on.
func (s *Set) track(name string, sock any) error {
	fs, ok := sock.(fileSocket)
	if !ok {
		// Every socket of package net has File; a wrapper would not.
		return fmt.Errorf("sockets: %s: %T cannot give its descriptor", name, sock)
	}
	s.mu.Lock()
	s.live[name] = fs
	s.mu.Unlock()
	return nil
}

// ReleaseUnclaimed closes the inherited sockets nobody asked for, such as
// the listener of a VIP that no longer exists, and returns their names.
// Call it once the agent has opened everything it serves.
func (s *Set) ReleaseUnclaimed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n, f := range s.inherited {
		f.Close()
		names = append(names, n)
	}
	clear(s.inherited)
	s.checkAllClaimed()
	sort.Strings(names)
	return names
}

// NamedFile is one socket to hand on: a duplicate of its descriptor, which
// the caller closes.
type NamedFile struct {
	Name string
	File *os.File
}

// Files returns duplicates of every open socket of the set, those handed out
// and those inherited but not claimed yet, sorted by name. The caller closes
// them. A socket handed out and since closed is left out and forgotten.
func (s *Set) Files() ([]NamedFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneClosed()
	var out []NamedFile
	fail := func(err error) ([]NamedFile, error) {
		for _, nf := range out {
			nf.File.Close()
		}
		return nil, err
	}
	for name, sock := range s.live {
		f, err := sock.File()
		if err != nil {
			return fail(fmt.Errorf("sockets: %s: %w", name, err))
		}
		out = append(out, NamedFile{Name: name, File: f})
	}
	for name, f := range s.inherited {
		dup, err := dupFile(f)
		if err != nil {
			return fail(fmt.Errorf("sockets: %s: %w", name, err))
		}
		out = append(out, NamedFile{Name: name, File: dup})
	}
	slices.SortFunc(out, func(a, b NamedFile) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// dupFile duplicates f's descriptor, close-on-exec. It does not call
// f.Fd(), which would clear O_NONBLOCK on the socket.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(raw uintptr) { fd, derr = dupCloexec(int(raw)) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// sameAddr reports whether a socket bound to got serves a request for
// network and want: the same IP (any unspecified address matches another),
// and the same port unless want's is 0.
func sameAddr(network, want string, got net.Addr) bool {
	var wip net.IP
	var wport int
	var gip net.IP
	var gport int
	switch {
	case strings.HasPrefix(network, "tcp"):
		w, err := net.ResolveTCPAddr(network, want)
		g, ok := got.(*net.TCPAddr)
		if err != nil || !ok {
			return false
		}
		wip, wport, gip, gport = w.IP, w.Port, g.IP, g.Port
	case strings.HasPrefix(network, "udp"):
		w, err := net.ResolveUDPAddr(network, want)
		g, ok := got.(*net.UDPAddr)
		if err != nil || !ok {
			return false
		}
		wip, wport, gip, gport = w.IP, w.Port, g.IP, g.Port
	default:
		return got.Network() == network && got.String() == want
	}
	if wport != 0 && wport != gport {
		return false
	}
	wAny := wip == nil || wip.IsUnspecified()
	gAny := gip == nil || gip.IsUnspecified()
	if wAny || gAny {
		return wAny && gAny
	}
	return wip.Equal(gip)
}

// ListenerName is the name of the VIP or upstream listener on addr
// ("ip:port"): "vip-127.0.0.2_8080", "vip-[__1]_8080".
func ListenerName(addr string) string {
	return "vip-" + strings.ReplaceAll(addr, ":", "_")
}

// checkName rejects names that LISTEN_FDNAMES cannot carry: systemd drops an
// FDNAME= that is longer than 255 bytes or holds ':' or a control character
// (fdname_is_valid). Spaces are refused too, for the logs' sake.
func checkName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("%w: %q is empty or longer than 255 bytes", ErrBadName, name)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || r == ':' {
			return fmt.Errorf("%w: %q holds ':', a space or a non-printable character", ErrBadName, name)
		}
	}
	return nil
}

// checkListenerName is checkName for the name of a listening socket, which
// must not start with "conn-": that prefix marks an established connection
// in systemd's store (StoreConnsInSystemd), and the next process would take
// the listener for one.
func checkListenerName(name string) error {
	if strings.HasPrefix(name, connFDPrefix) {
		return fmt.Errorf("%w: %q: the prefix %q is kept for held connections", ErrBadName, name, connFDPrefix)
	}
	return checkName(name)
}

// dupCloexec duplicates fd with FD_CLOEXEC set, as the net package does.
func dupCloexec(fd int) (int, error) {
	nfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}
