package catalogstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
)

// Deps are the collaborators of a Writer.
type Deps struct {
	// Store is the catalog to save. Required.
	Store *catalog.Store
	// Logger receives the writer's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics of metrics.go. Nil means a private
	// registry.
	Registerer prometheus.Registerer
	// Clock times the writes and stamps the file. Nil means clock.Real.
	Clock clock.Clock
}

// Writer saves the catalog store's snapshot in the file as it changes: at
// most once per Config.Interval, and at once on Flush. It never saves a
// snapshot that includes a restored catalog (Snapshot.RestoredAt): that
// catalog is on disk already, with the time it was really current, and
// saving it again would make it look younger than it is. Its methods are
// safe for concurrent use.
type Writer struct {
	cfg     Config
	store   *catalog.Store
	log     *slog.Logger
	clock   clock.Clock
	metrics *metrics

	// mu serialises writes and guards written, the index of the snapshot
	// last written (0: none).
	mu      sync.Mutex
	written uint64

	// lifeMu guards the loop's lifecycle: cancel and done are set by
	// Start; closed by Close.
	lifeMu sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	closed bool
}

// NewWriter validates cfg and allocates a Writer. It starts nothing.
func NewWriter(cfg Config, deps Deps) (*Writer, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("catalogstate: new writer: Deps.Store is nil")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real
	}
	m, err := newMetrics(deps.Registerer, deps.Store)
	if err != nil {
		return nil, err
	}
	return &Writer{cfg: cfg, store: deps.Store, log: deps.Logger, clock: deps.Clock, metrics: m}, nil
}

// Config is the writer's configuration, defaults applied.
func (w *Writer) Config() Config { return w.cfg }

// Start starts the goroutine that follows the store. A change is written
// Interval after it, with every change made meanwhile.
func (w *Writer) Start(context.Context) error {
	w.lifeMu.Lock()
	defer w.lifeMu.Unlock()
	if w.cancel != nil || w.closed {
		return fmt.Errorf("catalogstate: start: writer already started or closed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	// Watched here, not in the goroutine, so that a change made as soon
	// as Start returns is not missed.
	_, changed := w.store.Watch()
	go w.loop(ctx, changed)
	return nil
}

func (w *Writer) loop(ctx context.Context, changed <-chan struct{}) {
	defer close(w.done)
	for {
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
		wait, t := clock.After(w.clock, w.cfg.Interval)
		select {
		case <-wait:
		case <-ctx.Done():
			t.Stop()
			return
		}
		// Changes from now on are seen in the next round.
		_, changed = w.store.Watch()
		_ = w.Flush()
	}
}

// Flush writes the current snapshot now, unless it was written already or
// includes a restored catalog. The error is also logged and counted.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	snap := w.store.Current()
	if snap.Index() == w.written || !snap.RestoredAt().IsZero() {
		return nil
	}
	members := make([]catalog.Member, 0, len(snap.Members()))
	for _, m := range snap.Members() {
		// A record gossip has not completed (this node's before its
		// address is known) would make the whole file refused.
		if m.Record.Validate() == nil {
			members = append(members, *m)
		}
	}
	n, err := Write(w.cfg, State{Node: w.cfg.Node, SavedAt: w.clock.Now(), Members: members})
	switch {
	case errors.Is(err, ErrTooLarge):
		w.metrics.writes.WithLabelValues(resultTooLarge).Inc()
		w.log.Warn("catalog state not saved: too large; a restart answers only once gossip syncs", "file", w.cfg.Path, "err", err)
		return err
	case err != nil:
		w.metrics.writes.WithLabelValues(resultError).Inc()
		w.log.Warn("catalog state not saved", "file", w.cfg.Path, "err", err)
		return err
	}
	w.written = snap.Index()
	w.metrics.writes.WithLabelValues(resultOK).Inc()
	w.metrics.size.Set(float64(n))
	w.log.Debug("catalog state saved", "file", w.cfg.Path, "members", len(members), "bytes", n, "index", snap.Index())
	return nil
}

// Close stops the goroutine and writes the current snapshot a last time.
// It is idempotent.
func (w *Writer) Close() error {
	w.lifeMu.Lock()
	if w.closed {
		w.lifeMu.Unlock()
		return nil
	}
	w.closed = true
	cancel, done := w.cancel, w.done
	w.lifeMu.Unlock()
	if cancel == nil {
		return nil // never started: nothing to save
	}
	cancel()
	<-done
	return w.Flush()
}
