package accesslog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync/atomic"

	"github.com/coreos/go-systemd/v22/journal"
)

// Journal is the Config.Path that sends lines to the systemd journal.
const Journal = "journal"

// journalIdentifier is the SYSLOG_IDENTIFIER of the journal entries, so
// that `journalctl -t meshwork-access` shows the access log alone.
const journalIdentifier = "meshwork-access"

// fileMode is the mode of a log file the access log creates: paths and
// client addresses are not for every local user.
const fileMode = 0o640

// A destination takes finished lines. Only the writer goroutine calls
// write; reopen and close may be called from any goroutine, also while a
// write is under way.
type destination interface {
	// write writes lines, each ending in a newline, in order, and returns
	// how many were written whole.
	write(lines [][]byte) (int, error)
	// reopen starts a new file at the same path (after logrotate renamed
	// the old one); a no-op where that means nothing.
	reopen() error
	// close releases the destination; a write under way fails.
	close() error
}

// fileDest appends to a file opened with O_APPEND, so that lines from a
// restarted agent, or a second writer, land whole at the end.
type fileDest struct {
	path  string
	f     atomic.Pointer[os.File]
	batch []byte // the writer's: lines joined for one write call
}

func openFile(path string) (*fileDest, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	d := &fileDest{path: path}
	d.f.Store(f)
	return d, nil
}

func (d *fileDest) write(lines [][]byte) (int, error) {
	d.batch = d.batch[:0]
	for _, l := range lines {
		d.batch = append(d.batch, l...)
	}
	f := d.f.Load()
	n, err := f.Write(d.batch)
	if errors.Is(err, os.ErrClosed) && n == 0 {
		// Reopen closed the file between the load and the write; the
		// batch goes to the new one.
		if nf := d.f.Load(); nf != f {
			n, err = nf.Write(d.batch)
		}
	}
	// Count the lines that fit whole in the n bytes written.
	whole := 0
	for _, l := range lines {
		if n < len(l) {
			break
		}
		n -= len(l)
		whole++
	}
	return whole, err
}

// openAppend opens path for appending, creating it with fileMode if it
// is missing. The mode is set explicitly: the shipped unit's UMask=0077
// would otherwise leave 0600, and a log shipper in the file's group could
// not read it. An existing file keeps the mode it has.
func openAppend(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, fileMode)
		if err == nil {
			if err := f.Chmod(fileMode); err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed between the two opens: create it after all
		}
		return f, err
	}
}

func (d *fileDest) reopen() error {
	f, err := openAppend(d.path)
	if err != nil {
		return err
	}
	if old := d.f.Swap(f); old != nil {
		// A write under way on old finishes first: os.File defers the
		// close until it returns.
		return old.Close()
	}
	return nil
}

func (d *fileDest) close() error {
	if f := d.f.Swap(nil); f != nil {
		return f.Close()
	}
	return nil
}

// journalDest sends each line as one journal entry, its MESSAGE, through
// the journal's native socket.
type journalDest struct{}

// journalVars are the fields of every entry besides MESSAGE and PRIORITY.
// journal.Send only reads them.
var journalVars = map[string]string{"SYSLOG_IDENTIFIER": journalIdentifier}

func openJournal() (journalDest, error) {
	if !journal.Enabled() {
		return journalDest{}, ErrNoJournal
	}
	return journalDest{}, nil
}

func (journalDest) write(lines [][]byte) (int, error) {
	for i, l := range lines {
		// The journal keeps lines; the newline would be part of MESSAGE.
		if err := journal.Send(string(l[:len(l)-1]), journal.PriInfo, journalVars); err != nil {
			return i, fmt.Errorf("journal: %w", err)
		}
	}
	return len(lines), nil
}

func (journalDest) reopen() error { return nil }
func (journalDest) close() error  { return nil }
