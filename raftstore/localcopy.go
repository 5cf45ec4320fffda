package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/internal/atomicfile"
)

// indexed is a replicated value that is replaced whole and ordered by the
// Raft index of its last change.
type indexed interface{ Index() uint64 }

// localCopy is this agent's copy of one replicated value: the policy
// (Replica) or the ACL state (aclReplica). Readers take the value without a
// lock and wait for the next one on a channel. Each newer value installed is
// persisted to a file, bursts coalesced into one write, so that an agent
// restarted while every server is down still has the last one it knew.
type localCopy[T indexed] struct {
	cur atomic.Value // T

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at each install

	what      string // "policy", "acl": for logs
	path      string
	encode    func() ([]byte, error) // the file's contents, from the current value
	onInstall func(T)                // optional
	log       *slog.Logger
	persistCh chan struct{}
}

func newLocalCopy[T indexed](initial T, what, path string, log *slog.Logger) *localCopy[T] {
	c := &localCopy[T]{changed: make(chan struct{}), what: what, path: path, log: log, persistCh: make(chan struct{}, 1)}
	c.cur.Store(initial)
	return c
}

// current returns the value in force. It never blocks.
func (c *localCopy[T]) current() T { return c.cur.Load().(T) }

// watch returns the current value and a channel closed when a newer one is
// installed.
func (c *localCopy[T]) watch() (T, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current(), c.changed
}

// install makes v current when its index is newer, or different when force
// (a cluster restored or rebuilt with lower indexes), and has it persisted.
func (c *localCopy[T]) install(v T, force bool) bool {
	c.mu.Lock()
	cur := c.current()
	if v.Index() == cur.Index() || (v.Index() < cur.Index() && !force) {
		c.mu.Unlock()
		return false
	}
	c.cur.Store(v)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if c.onInstall != nil {
		c.onInstall(v)
	}
	select {
	case c.persistCh <- struct{}{}:
	default:
	}
	return true
}

// readFile returns the persisted file; nil without an error when there is
// none yet.
func (c *localCopy[T]) readFile() ([]byte, error) {
	b, err := os.ReadFile(c.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("raftstore: load %s: %w", c.path, err)
	}
	return b, nil
}

// save writes the current value atomically (a temporary file, fsync, then
// rename), mode 0600.
func (c *localCopy[T]) save() error {
	b, err := c.encode()
	if err != nil {
		return err
	}
	return atomicfile.Write(c.path, b, 0o600)
}

// persistLoop saves after each install until ctx ends.
func (c *localCopy[T]) persistLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.persistCh:
			if err := c.save(); err != nil {
				c.log.Warn(c.what+" persist failed", "path", c.path, "err", err)
			}
		}
	}
}

// followLoop runs once (one stream or blocking query to the servers) again
// and again until ctx ends: at once after a run that ended well, after a
// jittered backoff after one that failed. The backoff starts over once a run
// got anything (progress).
func followLoop(ctx context.Context, log *slog.Logger, what string, once func() (progress bool, err error)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		progress, err := once()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if progress {
			backoff = 100 * time.Millisecond
		}
		log.Debug(what+" follow ended", "err", err)
		d := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, 5*time.Second)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
