package sockets

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/internal/atomicfile"
)

// HeldConn is an established connection handed to the next agent with the
// state that agent needs to carry it on.
type HeldConn struct {
	// Name identifies the connection: 1 to 64 of [A-Za-z0-9_-] (a session ID in hex).
	Name string
	// File is the connection's socket.
	File *os.File
	// Meta is opaque state, at most MaxConnMeta bytes.
	Meta []byte
}

// MaxConnMeta bounds HeldConn.Meta, so that one connection's message and
// the state file of all of them stay bounded.
const MaxConnMeta = 4096

const (
	// connFDPrefix starts the name under which systemd's store holds a
	// connection; no listener may use it (checkListenerName).
	connFDPrefix = "conn-"
	// maxConnName is the longest HeldConn.Name.
	maxConnName = 64
	// maxHeldConns bounds the connections one process accepts from each
	// source: well above FileDescriptorStoreMax, below any sane LimitNOFILE
	// of a host that holds so many.
	maxHeldConns = 65536
	// maxConnStateAge is how old a connection state file may be. A restart
	// takes seconds; a peer of a connection paused for longer has given up
	// on it, and the file is another run's.
	maxConnStateAge = 10 * time.Minute
	// maxConnStateSkew is how far in the future a state file's time may
	// be (the clock stepped back during the restart) before the file is
	// not trusted.
	maxConnStateSkew = time.Minute
)

// ErrBadHeldConn is returned for a HeldConn that cannot be carried: a name
// outside 1 to 64 of [A-Za-z0-9_-] (then ErrBadName too), Meta longer than
// MaxConnMeta, no File, a name given twice, or more than 65536 of them.
var ErrBadHeldConn = errors.New("sockets: invalid held connection")

// ErrBadConnState is wrapped by the errors TakeConns logs for a message
// from a predecessor or a connection state file that is malformed or
// damaged; the connections they name are reset, not taken.
var ErrBadConnState = errors.New("sockets: damaged connection state")

// checkConnName rejects a HeldConn.Name outside 1 to 64 of [A-Za-z0-9_-].
func checkConnName(name string) error {
	if name == "" || len(name) > maxConnName {
		return fmt.Errorf("%w: connection name %q is empty or longer than %d bytes", ErrBadName, name, maxConnName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w: connection name %q holds %q, want only [A-Za-z0-9_-]", ErrBadName, name, c)
		}
	}
	return nil
}

// checkHeldConns checks that every connection can be carried, and returns
// the index of the first that cannot with the reason.
func checkHeldConns(conns []HeldConn) (int, error) {
	seen := make(map[string]bool, len(conns))
	for i, c := range conns {
		err := checkConnName(c.Name)
		switch {
		case i >= maxHeldConns:
			err = fmt.Errorf("%w: more than %d connections", ErrBadHeldConn, maxHeldConns)
		case err != nil:
			err = fmt.Errorf("%w: %w", ErrBadHeldConn, err)
		case len(c.Meta) > MaxConnMeta:
			err = fmt.Errorf("%w: %s: meta is %d bytes, more than %d", ErrBadHeldConn, c.Name, len(c.Meta), MaxConnMeta)
		case c.File == nil:
			err = fmt.Errorf("%w: %s: no socket", ErrBadHeldConn, c.Name)
		case seen[c.Name]:
			err = fmt.Errorf("%w: %s: the name is given twice", ErrBadHeldConn, c.Name)
		}
		if err != nil {
			return i, err
		}
		seen[c.Name] = true
	}
	return len(conns), nil
}

// A connection's name and meta travel as one entry, in a message to a
// successor (SendConns) and in the state file (StoreConnsInSystemd):
//
//	name length   1 byte, 1 to 64
//	name          [A-Za-z0-9_-]
//	meta length   2 bytes, big endian, 0 to MaxConnMeta
//	meta
const maxConnEntry = 1 + maxConnName + 2 + MaxConnMeta

func appendConnEntry(b []byte, name string, meta []byte) []byte {
	b = append(b, byte(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(meta)))
	return append(b, meta...)
}

// readConnEntry decodes the entry at the start of b and returns its length.
// The meta is a copy. Errors say where, from the start of b.
func readConnEntry(b []byte) (name string, meta []byte, n int, err error) {
	if len(b) < 1 {
		return "", nil, 0, fmt.Errorf("%w: entry ends before its name's length", ErrBadConnState)
	}
	nl := int(b[0])
	if nl == 0 || nl > maxConnName {
		return "", nil, 0, fmt.Errorf("%w: name length %d at byte 0, want 1 to %d", ErrBadConnState, nl, maxConnName)
	}
	if len(b) < 1+nl+2 {
		return "", nil, 0, fmt.Errorf("%w: entry ends within its name (%d bytes, need %d)", ErrBadConnState, len(b), 1+nl+2)
	}
	name = string(b[1 : 1+nl])
	if err := checkConnName(name); err != nil {
		return "", nil, 0, fmt.Errorf("%w: at byte 1: %w", ErrBadConnState, err)
	}
	ml := int(binary.BigEndian.Uint16(b[1+nl:]))
	if ml > MaxConnMeta {
		return "", nil, 0, fmt.Errorf("%w: %s: meta length %d at byte %d, more than %d", ErrBadConnState, name, ml, 1+nl, MaxConnMeta)
	}
	n = 1 + nl + 2 + ml
	if len(b) < n {
		return "", nil, 0, fmt.Errorf("%w: %s: meta of %d bytes ends after %d", ErrBadConnState, name, ml, len(b)-(1+nl+2))
	}
	return name, slices.Clone(b[1+nl+2 : n]), n, nil
}

// decodeConnMessage decodes the body of one message of SendConns: exactly
// one entry.
func decodeConnMessage(body []byte) (name string, meta []byte, err error) {
	name, meta, n, err := readConnEntry(body)
	if err != nil {
		return "", nil, err
	}
	if n != len(body) {
		return "", nil, fmt.Errorf("%w: %s: %d bytes after the entry", ErrBadConnState, name, len(body)-n)
	}
	return name, meta, nil
}

// The connection state file, written by StoreConnsInSystemd and read by
// TakeConns:
//
//	"meshwork-conns/1\n"   format and version
//	written               8 bytes, Unix nanoseconds, big endian
//	count                 4 bytes, big endian, at most maxHeldConns
//	count entries         as above, names unique
//	CRC-32C               4 bytes, of everything before
const (
	connStateFormat = "meshwork-conns/"
	connStateMagic  = connStateFormat + "1\n"
	connStateHeader = len(connStateMagic) + 8 + 4
	maxConnState    = connStateHeader + maxHeldConns*maxConnEntry + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// connEntry is one connection of the state file.
type connEntry struct {
	name string
	meta []byte
}

func encodeConnState(written time.Time, conns []HeldConn) []byte {
	b := make([]byte, 0, connStateHeader+len(conns)*(1+maxConnName+2)+4)
	b = append(b, connStateMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(written.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, uint32(len(conns)))
	for _, c := range conns {
		b = appendConnEntry(b, c.Name, c.Meta)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeConnState decodes a connection state file. Errors wrap
// ErrBadConnState and say what was wrong and at which byte.
func decodeConnState(b []byte) (time.Time, []connEntry, error) {
	if !strings.HasPrefix(string(b[:min(len(b), len(connStateFormat))]), connStateFormat) {
		return time.Time{}, nil, fmt.Errorf("%w: not a connection state file (no %q at the start)", ErrBadConnState, connStateFormat)
	}
	if len(b) < len(connStateMagic) || string(b[:len(connStateMagic)]) != connStateMagic {
		version, _, _ := strings.Cut(string(b[len(connStateFormat):min(len(b), len(connStateFormat)+16)]), "\n")
		return time.Time{}, nil, fmt.Errorf("%w: format version %q, want %q", ErrBadConnState, version, strings.TrimSpace(connStateMagic[len(connStateFormat):]))
	}
	if len(b) < connStateHeader+4 {
		return time.Time{}, nil, fmt.Errorf("%w: %d bytes, shorter than the header and checksum (%d)", ErrBadConnState, len(b), connStateHeader+4)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return time.Time{}, nil, fmt.Errorf("%w: checksum %08x, want %08x: damaged or cut short", ErrBadConnState, got, sum)
	}
	off := len(connStateMagic)
	written := time.Unix(0, int64(binary.BigEndian.Uint64(body[off:])))
	off += 8
	count := binary.BigEndian.Uint32(body[off:])
	off += 4
	if count > maxHeldConns {
		return time.Time{}, nil, fmt.Errorf("%w: %d connections at byte %d, more than %d", ErrBadConnState, count, off-4, maxHeldConns)
	}
	entries := make([]connEntry, 0, min(int(count), (len(body)-off)/4))
	seen := make(map[string]bool, cap(entries))
	for i := range int(count) {
		name, meta, n, err := readConnEntry(body[off:])
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("connection %d at byte %d: %w", i, off, err)
		}
		if seen[name] {
			return time.Time{}, nil, fmt.Errorf("%w: connection %d at byte %d: %s is there twice", ErrBadConnState, i, off, name)
		}
		seen[name] = true
		entries = append(entries, connEntry{name: name, meta: meta})
		off += n
	}
	if off != len(body) {
		return time.Time{}, nil, fmt.Errorf("%w: %d bytes after the last of %d connections, at byte %d", ErrBadConnState, len(body)-off, count, off)
	}
	return written, entries, nil
}

// readConnState reads the state file at path. A missing file is
// fs.ErrNotExist.
func readConnState(path string) (time.Time, []connEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(maxConnState)+1))
	if err != nil {
		return time.Time{}, nil, err
	}
	if len(b) > maxConnState {
		return time.Time{}, nil, fmt.Errorf("%w: more than %d bytes", ErrBadConnState, maxConnState)
	}
	return decodeConnState(b)
}

// StoreConnsInSystemd stores each connection in systemd's file descriptor store of the
// service under the name "conn-"+Name with FDPOLL=0 (so that systemd does not drop a socket
// whose peer half-closed), and writes every Meta to metaPath (mode 0600, atomically: temp
// file, fsync, rename; a format version and the time in it). It returns how many it stored;
// it stops at the first refusal/error and returns it (the rest stay with the caller, which
// closes them). Without $NOTIFY_SOCKET: ErrNoNotifySocket, nothing written.
// The caller closes its own *os.File / conn afterwards; systemd's copy keeps the socket open.
//
// The state file names exactly the connections stored: when it cannot be
// written, the ones stored are removed from the store again and the count
// is 0. Call it once per stop, from the service's main process (systemd
// takes FDSTORE= from it only); a second call replaces the state file.
// systemd older than 246 ignores FDPOLL=0 and drops a stored connection
// whose peer hangs up.
func (s *Set) StoreConnsInSystemd(metaPath string, conns []HeldConn) (int, error) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return 0, ErrNoNotifySocket
	}
	valid, verr := checkHeldConns(conns)
	stored := 0
	var serr error
	for _, c := range conns[:valid] {
		if serr = storeConn(sock, c); serr != nil {
			break
		}
		stored++
	}
	if serr == nil {
		serr = verr
	}
	if stored == 0 {
		return 0, serr
	}
	if err := atomicfile.Write(metaPath, encodeConnState(s.clock.Now(), conns[:stored]), 0o600); err != nil {
		for _, c := range conns[:stored] {
			if rerr := NotifyFDStoreRemove(sock, connFDPrefix+c.Name); rerr != nil {
				s.log.Warn("held connection stays in systemd's store without its state; the next agent resets it", "name", c.Name, "err", rerr)
			}
		}
		return 0, fmt.Errorf("sockets: store connections: write %s: %w", metaPath, err)
	}
	s.log.Info("connections stored in systemd's file descriptor store", "count", stored, "state", metaPath)
	return stored, serr
}

// storeConn sends one connection to systemd's store.
func storeConn(notifySocket string, c HeldConn) error {
	rc, err := c.File.SyscallConn()
	if err != nil {
		return fmt.Errorf("sockets: store connection %s: %w", c.Name, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = sendNotify(notifySocket, "FDSTORE=1\nFDNAME="+connFDPrefix+c.Name+"\nFDPOLL=0", int(fd))
	}); err != nil {
		return fmt.Errorf("sockets: store connection %s: %w", c.Name, err)
	}
	if serr != nil {
		return fmt.Errorf("sockets: store connection %s: %w", c.Name, serr)
	}
	return nil
}

// addStoredConn keeps a "conn-*" socket systemd passed for TakeConns, apart
// from the listeners. s.mu is held or s is not shared yet.
func (s *Set) addStoredConn(name string, f *os.File, from string) {
	if from != "systemd" {
		// A predecessor sends connections over their own socket
		// (SendConns), never as listeners.
		s.log.Error("a held connection came as a listening socket; resetting it", "from", from, "name", name)
		resetClose(f)
		return
	}
	if _, dup := s.storedConns[name]; dup {
		s.log.Error("systemd passed two held connections of one name; resetting the second", "name", name)
		resetClose(f)
		return
	}
	if s.storedConns == nil {
		s.storedConns = map[string]*os.File{}
	}
	s.storedConns[name] = f
}

// TakeConns returns the connections handed to this process: those systemd passed under
// "conn-*" names (matched with the entries of metaPath, then metaPath is removed, and each
// "conn-*" name is removed from systemd's store with FDSTOREREMOVE=1 at once — otherwise the
// store's copy would keep the socket open after the agent closes it), and those a predecessor
// sent with SendConns (wait for the predecessor to close its side, bounded by ctx). A socket
// with no meta, or meta with no socket, or a damaged/too-old (> 10 min) meta file: logged,
// and a socket without meta is closed with a reset (SO_LINGER 0), never silently.
// Call once, after the process has started serving; later calls return nothing.
//
// The only error is ctx ending before the predecessor closed its side:
// the connections it sent until then are returned with it, and it fails
// to send the rest. metaPath "" means no state file: every connection
// systemd passed is reset.
func (s *Set) TakeConns(ctx context.Context, metaPath string) ([]HeldConn, error) {
	s.mu.Lock()
	if s.connsTaken {
		s.mu.Unlock()
		return nil, nil
	}
	s.connsTaken = true
	stored, in := s.storedConns, s.connsIn
	s.storedConns, s.connsIn = nil, nil
	s.mu.Unlock()

	out := s.takeStoredConns(metaPath, stored)
	if in == nil {
		return out, nil
	}
	sent, err := in.take(ctx)
	names := make(map[string]bool, len(out))
	for _, c := range out {
		names[c.Name] = true
	}
	for _, c := range sent {
		if names[c.Name] {
			s.log.Error("a predecessor and systemd handed over a connection of the same name; resetting the predecessor's", "name", c.Name)
			resetClose(c.File)
			continue
		}
		out = append(out, c)
	}
	if len(sent) > 0 {
		s.log.Info("connections handed over", "from", "predecessor", "count", len(sent))
	}
	if err != nil {
		return out, fmt.Errorf("sockets: take connections: %w", err)
	}
	return out, nil
}

// takeStoredConns matches the "conn-*" sockets systemd passed with the
// entries of the state file at metaPath, removes the file and the names
// from systemd's store, and returns those that have both.
func (s *Set) takeStoredConns(metaPath string, stored map[string]*os.File) []HeldConn {
	metas := map[string][]byte{}
	if metaPath != "" {
		written, entries, err := readConnState(metaPath)
		age := s.clock.Now().Sub(written)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if len(stored) > 0 {
				s.log.Error("held connections have no state file; resetting them", "state", metaPath, "count", len(stored))
			}
		case err != nil:
			s.log.Error("connection state file unusable; resetting its connections", "state", metaPath, "err", err)
		case age > maxConnStateAge || age < -maxConnStateSkew:
			s.log.Error("connection state file too old or dated in the future; resetting its connections", "state", metaPath, "written", written, "age", age.Round(time.Second), "max_age", maxConnStateAge)
		default:
			for _, e := range entries {
				metas[e.name] = e.meta
			}
		}
		if err := os.Remove(metaPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("connection state file not removed", "state", metaPath, "err", err)
		}
	}
	notify := os.Getenv("NOTIFY_SOCKET")
	fdNames := make([]string, 0, len(stored))
	for n := range stored {
		fdNames = append(fdNames, n)
	}
	slices.Sort(fdNames)
	var out []HeldConn
	var noState, notRemoved []string
	var removeErr error
	for _, fdName := range fdNames {
		f := stored[fdName]
		if err := NotifyFDStoreRemove(notify, fdName); err != nil {
			notRemoved = append(notRemoved, fdName)
			removeErr = err
		}
		name := strings.TrimPrefix(fdName, connFDPrefix)
		if err := checkConnName(name); err != nil {
			s.log.Error("held connection from systemd has an invalid name; resetting it", "name", fdName, "err", err)
			resetClose(f)
			continue
		}
		meta, ok := metas[name]
		if !ok {
			noState = append(noState, name)
			resetClose(f)
			continue
		}
		delete(metas, name)
		out = append(out, HeldConn{Name: name, File: f, Meta: meta})
	}
	if len(notRemoved) > 0 {
		s.log.Warn("held connections not removed from systemd's store; they stay open there until the unit stops", "count", len(notRemoved), "names", sample(notRemoved), "err", removeErr)
	}
	if len(noState) > 0 {
		s.log.Error("held connections have no state; reset", "count", len(noState), "names", sample(noState), "state", metaPath)
	}
	if len(metas) > 0 {
		orphans := make([]string, 0, len(metas))
		for name := range metas {
			orphans = append(orphans, name)
		}
		slices.Sort(orphans)
		s.log.Warn("connection state without a socket; dropped", "count", len(orphans), "names", sample(orphans), "state", metaPath)
	}
	if len(stored) > 0 {
		s.log.Info("connections handed over", "from", "systemd", "count", len(out), "reset", len(stored)-len(out))
	}
	return out
}

// sample is at most the first 20 of names, for a log line that stays
// readable when thousands of connections share one fate.
func sample(names []string) []string {
	return names[:min(len(names), 20)]
}

// resetClose closes a connection's socket so that its peer gets a reset,
// not an orderly end it could take for a complete answer: SO_LINGER 0
// makes the last close of the socket, in whichever process, send RST.
func resetClose(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
		})
	}
	f.Close()
}
