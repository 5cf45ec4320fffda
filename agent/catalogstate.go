package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshwork/meshwork/agent/catalogstate"
	"github.com/meshwork/meshwork/agent/readiness"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
)

// catalogState carries the catalog across a restart (docs/restart.md): it
// restores the file the previous agent of this node saved, before DNS and
// the tunnel serve, so that both answer from the last known catalog at
// once; it drops the restored catalog when gossip syncs or the catalog
// grows too old; and it saves the catalog as it changes and when gossip
// stops.
type catalogState struct {
	writer *catalogstate.Writer
	store  *catalog.Store
	// synced returns gossip's Synced channel; gossip is built after this
	// component, which starts before it.
	synced func() <-chan struct{}
	clock  clock.Clock
	log    *slog.Logger

	mu     sync.Mutex
	expiry clock.Timer // drops the restored catalog at its MaxAge
	stop   chan struct{}
	done   chan struct{}
	// previous is the health of this node's services in the saved
	// catalog, when it was saved within resumeChecksAge.
	previous map[string]catalog.Health
}

// resumeChecksAge bounds the age of a saved catalog whose health of this
// node's own services the local checks resume from: a restart or an
// upgrade, not an agent that was down for long.
const resumeChecksAge = 2 * time.Minute

// buildCatalogState makes the component. It is built and started first:
// the catalog is restored before gossip publishes and DNS and the tunnel
// serve, and its file is saved when gossip stops (buildMembership).
func (a *Agent) buildCatalogState() error {
	clk := a.deps.Clock
	if clk == nil {
		clk = clock.Real
	}
	w, err := catalogstate.NewWriter(catalogstate.Config{
		Path: filepath.Join(a.cfg.DataDir, catalogstate.FileName),
		Node: a.cfg.Node,
	}, catalogstate.Deps{
		Store:      a.store,
		Logger:     a.logger("catalog-state"),
		Registerer: a.reg,
		Clock:      clk,
	})
	if err != nil {
		return err
	}
	a.catalogState = &catalogState{
		writer: w,
		store:  a.store,
		synced: func() <-chan struct{} { return a.gossip.Synced() },
		clock:  clk,
		log:    a.logger("catalog-state"),
	}
	a.add("catalog-state", a.catalogState.start, a.catalogState.close)
	return nil
}

// start restores the saved catalog, if it is this node's and fresh
// enough, and starts the writer. A file that cannot be used is a warning
// and an empty start, never a failed one.
func (c *catalogState) start(ctx context.Context) error {
	cfg := c.writer.Config()
	now := c.clock.Now()
	st, err := catalogstate.Read(cfg, now)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c.log.Info("no catalog saved to restore; answering once gossip syncs", "file", cfg.Path)
	case errors.Is(err, catalogstate.ErrTooOld):
		c.log.Info("saved catalog not restored: too old; answering once gossip syncs",
			"file", cfg.Path, "saved_at", st.SavedAt, "max_age", cfg.MaxAge, "err", err)
	case err != nil:
		c.log.Warn("saved catalog not restored: unreadable; answering once gossip syncs", "file", cfg.Path, "err", err)
	default:
		c.restore(st, cfg.MaxAge, now)
		if now.Sub(st.SavedAt) <= resumeChecksAge {
			c.keepOwnHealth(st)
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	c.mu.Lock()
	c.stop, c.done = stop, done
	c.mu.Unlock()
	go c.endOnSync(stop, done)
	return c.writer.Start(ctx)
}

// restore puts the saved catalog under gossip's view, without this node's
// own record, which gossip publishes.
func (c *catalogState) restore(st catalogstate.State, maxAge time.Duration, now time.Time) {
	members := make([]catalog.Member, 0, len(st.Members))
	services := 0
	for _, m := range st.Members {
		if m.Node != st.Node {
			members = append(members, m)
			services += len(m.Services)
		}
	}
	if len(members) == 0 {
		c.log.Info("saved catalog holds no other node; nothing restored", "saved_at", st.SavedAt)
		return
	}
	c.store.Restore(members, st.SavedAt)
	c.log.Info("catalog restored from disk; serving it until gossip syncs",
		"nodes", len(members), "services", services, "saved_at", st.SavedAt, "age", now.Sub(st.SavedAt).Round(time.Millisecond))
	expireIn := max(st.SavedAt.Add(maxAge).Sub(now), 0)
	c.mu.Lock()
	c.expiry = c.clock.AfterFunc(expireIn, func() {
		if c.store.EndRestore() {
			c.log.Warn("restored catalog dropped: too old, and gossip has not synced; answering from gossip's view alone",
				"saved_at", st.SavedAt, "max_age", maxAge)
		}
	})
	c.mu.Unlock()
}

// keepOwnHealth keeps the health of this node's services as the saved
// catalog has it, for the local checks to resume from.
func (c *catalogState) keepOwnHealth(st catalogstate.State) {
	for _, m := range st.Members {
		if m.Node != st.Node {
			continue
		}
		prev := make(map[string]catalog.Health, len(m.Services))
		for _, svc := range m.Services {
			prev[svc.ID] = svc.Health
		}
		c.mu.Lock()
		c.previous = prev
		c.mu.Unlock()
	}
}

// ownHealth returns the health of this node's services in the saved
// catalog, or nil; the local checks resume from it.
func (c *catalogState) ownHealth() map[string]catalog.Health {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.previous
}

// endOnSync drops the restored catalog once gossip publishes its view of
// the cluster: from then on the catalog is gossip's alone.
func (c *catalogState) endOnSync(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	select {
	case <-c.synced():
		if c.store.EndRestore() {
			c.log.Info("gossip synced; the restored catalog is replaced by gossip's view")
		}
	case <-stop:
	}
}

// state says where the catalog comes from, for readiness.
func (c *catalogState) state() readiness.CatalogState {
	st := readiness.CatalogState{RestoredAt: c.store.Current().RestoredAt()}
	select {
	case <-c.synced():
		st.Synced = true
	default:
	}
	return st
}

// flush saves the catalog now: when gossip stops, its view is final.
func (c *catalogState) flush() { _ = c.writer.Flush() }

// close stops the timers and the writer, which saves the catalog a last
// time.
func (c *catalogState) close() error {
	c.mu.Lock()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	stop, done := c.stop, c.done
	c.stop = nil
	c.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return c.writer.Close()
}
