// Package catalogstate keeps the last catalog an agent knew on disk, so
// that an agent that restarts answers DNS and routes to the last known
// instances at once, before gossip has synchronised with the cluster
// (docs/restart.md). It owns the file's format, reads it back with the
// checks any outside input gets (a damaged file is an error that names
// what is wrong, never a panic), and writes it as the catalog changes:
// debounced, bounded in size, atomically.
//
// What a restored catalog is then used for, and when it is dropped, is
// decided by the catalog store (catalog.Store.Restore) and the agent.
package catalogstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/atomicfile"
)

// FileName is the file's name in the agent's data directory.
const FileName = "catalog.json"

// format names the format and its version in every file. A reader refuses
// any other, so that a later format is never misread.
const format = "meshwork-catalog/1"

// Defaults of Config.
const (
	// DefaultMaxAge bounds how old a file may be and still be used: past
	// it, instances have likely moved, and answering with them does more
	// harm than answering nothing until gossip syncs.
	DefaultMaxAge = 10 * time.Minute
	// DefaultMaxSize bounds the file, read or written: about three times a
	// catalog of 10,000 nodes with 10 services each (11 MB).
	DefaultMaxSize = 32 << 20
	// DefaultInterval is the shortest time between two writes: a burst of
	// gossip changes costs one write, and a crash loses at most that much.
	DefaultInterval = 5 * time.Second
)

// maxFutureSkew is how far in the future a file's time may be (clocks of
// a host move) and still count as just written.
const maxFutureSkew = time.Minute

// Errors of reading and writing the file. Each wraps ErrFile; a missing
// file also wraps os.ErrNotExist.
var (
	// ErrFile wraps every error about the file.
	ErrFile = errors.New("catalog state file")
	// ErrForeign is a file of another format or written by another node
	// (a data dir copied from another host).
	ErrForeign = errors.New("not this node's catalog state")
	// ErrTooOld is a file saved longer than Config.MaxAge ago, or in the
	// future past the clock's skew.
	ErrTooOld = errors.New("catalog state too old to use")
	// ErrTooLarge is a file, or a catalog to write, over Config.MaxSize.
	ErrTooLarge = errors.New("catalog state too large")
	// ErrInvalid is a file that is not a well-formed catalog state.
	ErrInvalid = errors.New("catalog state damaged")
)

// Config locates and bounds the file.
type Config struct {
	// Path is the file. Required.
	Path string
	// Node is this agent's node name, written in the file and required of
	// it when read. Required.
	Node string
	// MaxAge is the age past which a file is not used. Default:
	// DefaultMaxAge.
	MaxAge time.Duration
	// MaxSize bounds the file in bytes. Default: DefaultMaxSize.
	MaxSize int
	// Interval is the shortest time between two writes. Default:
	// DefaultInterval.
	Interval time.Duration
}

func (c *Config) applyDefaults() error {
	if c.Path == "" || c.Node == "" {
		return fmt.Errorf("catalogstate: config: Path and Node are required")
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxSize <= 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	return nil
}

// State is the catalog as one node saw it at one moment.
type State struct {
	// Node is the node that saved it.
	Node string
	// SavedAt is when the catalog was this node's view.
	SavedAt time.Time
	// Members are every node of the catalog, this one included.
	Members []catalog.Member
}

// doc is the file's JSON.
type doc struct {
	Format  string           `json:"format"`
	Node    string           `json:"node"`
	SavedAt time.Time        `json:"saved_at"`
	Members []catalog.Member `json:"members"`
}

// Encode returns the file's bytes for s; ErrTooLarge past maxSize bytes.
func Encode(s State, maxSize int) ([]byte, error) {
	b, err := json.Marshal(doc{Format: format, Node: s.Node, SavedAt: s.SavedAt.UTC(), Members: s.Members})
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %w", ErrFile, err)
	}
	if len(b) > maxSize {
		return nil, fmt.Errorf("%w: %w: %d bytes for %d members, over the limit of %d", ErrFile, ErrTooLarge, len(b), len(s.Members), maxSize)
	}
	return b, nil
}

// Decode parses and checks a file's bytes. It checks the shape only (the
// format, each member's record as gossip would check it, no node twice),
// not the node or the age: see Read. Its errors wrap ErrInvalid or
// ErrForeign and say what was wrong and where.
func Decode(b []byte) (State, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d doc
	if err := dec.Decode(&d); err != nil {
		return State{}, fmt.Errorf("%w: not a catalog state: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return State{}, fmt.Errorf("%w: data after the document", ErrInvalid)
	}
	if d.Format != format {
		return State{}, fmt.Errorf("%w: format %q, want %q", ErrForeign, d.Format, format)
	}
	if d.Node == "" {
		return State{}, fmt.Errorf("%w: node is empty", ErrInvalid)
	}
	if d.SavedAt.IsZero() {
		return State{}, fmt.Errorf("%w: saved_at is missing", ErrInvalid)
	}
	seen := make(map[string]bool, len(d.Members))
	for i := range d.Members {
		m := &d.Members[i]
		if err := m.Record.Validate(); err != nil {
			return State{}, fmt.Errorf("%w: members[%d]: %v", ErrInvalid, i, err)
		}
		switch m.Status {
		case catalog.StatusAlive, catalog.StatusSuspect, catalog.StatusFailed, catalog.StatusLeft:
		default:
			return State{}, fmt.Errorf("%w: members[%d] %q: status %q is unknown", ErrInvalid, i, m.Node, m.Status)
		}
		key := strings.ToLower(m.Node)
		if seen[key] {
			return State{}, fmt.Errorf("%w: members[%d]: node %q is listed twice", ErrInvalid, i, m.Node)
		}
		seen[key] = true
	}
	return State{Node: d.Node, SavedAt: d.SavedAt, Members: d.Members}, nil
}

// Read reads the file of cfg and returns the state in it when this node
// wrote it and it is younger than cfg.MaxAge at now. Every error wraps
// ErrFile, and one of os.ErrNotExist, ErrTooLarge, ErrInvalid, ErrForeign
// or ErrTooOld; the state is returned with ErrTooOld, so that the caller
// can say how old it was.
func Read(cfg Config, now time.Time) (State, error) {
	if err := cfg.applyDefaults(); err != nil {
		return State{}, err
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return State{}, fmt.Errorf("%w %s: %w", ErrFile, cfg.Path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(cfg.MaxSize)+1))
	if err != nil {
		return State{}, fmt.Errorf("%w %s: %w", ErrFile, cfg.Path, err)
	}
	if len(b) > cfg.MaxSize {
		return State{}, fmt.Errorf("%w %s: %w: larger than %d bytes", ErrFile, cfg.Path, ErrTooLarge, cfg.MaxSize)
	}
	s, err := Decode(b)
	if err != nil {
		return State{}, fmt.Errorf("%w %s: %w", ErrFile, cfg.Path, err)
	}
	if s.Node != cfg.Node {
		return State{}, fmt.Errorf("%w %s: %w: written by node %q, not %q (a data dir copied from another host?)", ErrFile, cfg.Path, ErrForeign, s.Node, cfg.Node)
	}
	switch age := now.Sub(s.SavedAt); {
	case age > cfg.MaxAge:
		return s, fmt.Errorf("%w %s: %w: saved %s ago, more than %s", ErrFile, cfg.Path, ErrTooOld, age.Round(time.Second), cfg.MaxAge)
	case age < -maxFutureSkew:
		return s, fmt.Errorf("%w %s: %w: saved at %s, %s in the future (did the clock move back?)", ErrFile, cfg.Path, ErrTooOld, s.SavedAt.Format(time.RFC3339), (-age).Round(time.Second))
	}
	return s, nil
}

// Write replaces the file of cfg with s, atomically (a temporary file,
// synced, renamed over it), readable by the agent's user only. It returns
// the size written.
func Write(cfg Config, s State) (int, error) {
	if err := cfg.applyDefaults(); err != nil {
		return 0, err
	}
	b, err := Encode(s, cfg.MaxSize)
	if err != nil {
		return 0, err
	}
	if err := atomicfile.Write(cfg.Path, b, 0o600); err != nil {
		return 0, fmt.Errorf("%w %s: write: %w", ErrFile, cfg.Path, err)
	}
	return len(b), nil
}
