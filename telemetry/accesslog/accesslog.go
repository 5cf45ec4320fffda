// Package accesslog writes the access log: one JSON line per L7 request
// or L4 connection an agent carries, with the fields an Envoy user looks
// for (docs/observability-accesslog.md), to a file or the systemd journal.
//
// A Log is an observe.Observer. Its End runs on the data path and never
// blocks: it samples, applies the rate limit, formats the line into a
// pooled buffer and hands it to a bounded queue; one writer goroutine
// writes. A line that does not fit is dropped and counted, never waited
// for.
package accesslog

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/internal/clock"
	"github.com/meshwork/meshwork/transport/observe"
)

// Errors of New and Reopen.
var (
	// ErrBadConfig: a Config field is out of range; the error names it.
	ErrBadConfig = errors.New("invalid access log setting")
	// ErrNoJournal: Path is "journal" but no systemd journal listens on
	// this host.
	ErrNoJournal = errors.New("no systemd journal socket (/run/systemd/journal/socket)")
	// ErrClosed: the Log was closed.
	ErrClosed = errors.New("access log closed")
)

// Config configures a Log. The agent fills it from the telemetry.access_log
// section of its config.
type Config struct {
	// Path is an absolute file path, appended to (and created with mode
	// 0640 if missing), or Journal for the systemd journal. Required.
	Path string
	// SampleRate is the share of calls logged, from 0 to 1. The decision
	// follows the trace ID, so that both agents of a call, and every
	// trace the tracer samples at a lower rate, log the same calls. No
	// default: 0 logs nothing (the agent's config defaults it to 1).
	SampleRate float64
	// RateLimit is the most lines written per second, with bursts of up
	// to one second's worth. Default (0): 1000.
	RateLimit int
	// QueueSize is the most lines waiting for the writer; more are
	// dropped. Default (0): 1024, a second of lines at the default rate
	// limit, about half a megabyte.
	QueueSize int
	// CloseTimeout bounds how long Close waits for queued lines to be
	// written. Default (0): 5s.
	CloseTimeout time.Duration
	// Clock is the time source of the rate limit. Default (nil): the wall
	// clock.
	Clock clock.Clock
}

// Defaults of Config.
const (
	DefaultRateLimit    = 1000
	DefaultQueueSize    = 1024
	DefaultCloseTimeout = 5 * time.Second
)

// maxBatch is the most lines the writer joins into one write.
const maxBatch = 64

// maxPooledBuf is the largest line buffer kept for reuse: a rare line
// made long by a hostile path does not pin its memory in the pool.
const maxPooledBuf = 16 << 10

// Log is the access log. End, Begin, Reopen and Close are safe for
// concurrent use.
type Log struct {
	sampleRate float64
	limit      *limiter
	clock      clock.Clock
	m          *metrics
	logger     *slog.Logger

	queue chan *[]byte
	bufs  sync.Pool // of *[]byte

	closed       atomic.Bool
	stop         chan struct{} // closed by Close: drain and return
	done         chan struct{} // closed by the writer when it returns
	closeTimeout time.Duration
	closeOnce    sync.Once
	closeErr     error

	mu   sync.Mutex // orders Reopen against Close
	dest destination
}

var _ observe.Observer = (*Log)(nil)

// New checks cfg, opens the destination, registers the metrics on reg
// and starts the writer goroutine; Close stops it. Unlike most components
// it has no Start: it is an observer, in use from the moment the data
// plane is given it.
func New(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Log, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("accesslog: %w", err)
	}
	var dest destination
	if cfg.Path == Journal {
		d, err := openJournal()
		if err != nil {
			return nil, fmt.Errorf("accesslog: telemetry.access_log.path %q: %w: start systemd-journald or set a file path", cfg.Path, err)
		}
		dest = d
	} else {
		d, err := openFile(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("accesslog: telemetry.access_log.path: %w", err)
		}
		dest = d
	}
	l, err := newLog(cfg, dest, reg, logger)
	if err != nil {
		dest.close()
		return nil, err
	}
	return l, nil
}

// newLog starts a Log on an open destination, with cfg checked.
func newLog(cfg Config, dest destination, reg prometheus.Registerer, logger *slog.Logger) (*Log, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("accesslog: metrics: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		sampleRate:   cfg.SampleRate,
		limit:        newLimiter(cfg.RateLimit),
		clock:        cfg.Clock,
		m:            m,
		logger:       logger,
		queue:        make(chan *[]byte, cfg.QueueSize),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		closeTimeout: cfg.CloseTimeout,
		dest:         dest,
	}
	l.bufs.New = func() any {
		b := make([]byte, 0, 1024)
		return &b
	}
	go l.run(dest)
	return l, nil
}

func (cfg *Config) setDefaults() error {
	switch {
	case cfg.Path == "":
		return fmt.Errorf("%w: telemetry.access_log.path is empty (the access log is off)", ErrBadConfig)
	case cfg.Path != Journal && !filepath.IsAbs(cfg.Path):
		return fmt.Errorf("%w: telemetry.access_log.path %q must be an absolute path or %q", ErrBadConfig, cfg.Path, Journal)
	case !(cfg.SampleRate >= 0 && cfg.SampleRate <= 1): // also NaN
		return fmt.Errorf("%w: telemetry.access_log.sample_rate %v must be from 0 to 1", ErrBadConfig, cfg.SampleRate)
	case cfg.RateLimit < 0:
		return fmt.Errorf("%w: telemetry.access_log.rate_limit %d must be at least 1 line per second", ErrBadConfig, cfg.RateLimit)
	case cfg.QueueSize < 0:
		return fmt.Errorf("%w: queue size %d must not be negative", ErrBadConfig, cfg.QueueSize)
	case cfg.CloseTimeout < 0:
		return fmt.Errorf("%w: close timeout %v must not be negative", ErrBadConfig, cfg.CloseTimeout)
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = DefaultRateLimit
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real
	}
	return nil
}

// Begin does nothing: a call is logged once, when it ends.
func (l *Log) Begin(*observe.Call) {}

// End logs c, unless sampling leaves it out, the rate limit is spent or
// the queue is full; each of those is counted. It does not block and does
// not keep c. After Close it does nothing.
func (l *Log) End(c *observe.Call) {
	if l.closed.Load() {
		return
	}
	if !l.sampled(c) {
		l.m.sampledOut.Inc()
		return
	}
	if !l.limit.allow(l.clock.Now()) {
		l.m.rateLimited.Inc()
		return
	}
	bp := l.bufs.Get().(*[]byte)
	*bp = appendLine((*bp)[:0], c)
	select {
	case l.queue <- bp:
	default:
		l.m.queueFull.Inc()
		l.putBuf(bp)
	}
}

// sampled decides from the trace ID where there is one, as tracing does,
// and by chance otherwise.
func (l *Log) sampled(c *observe.Call) bool {
	switch {
	case l.sampleRate >= 1:
		return true
	case c.Trace.TraceID != [16]byte{}:
		return observe.Sampled(c.Trace.TraceID, l.sampleRate)
	}
	return rand.Float64() < l.sampleRate
}

func (l *Log) putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		l.bufs.Put(bp)
	}
}

// run is the writer: it takes lines off the queue, up to maxBatch at a
// time, and writes them, until Close; then it writes what is still queued.
func (l *Log) run(dest destination) {
	defer close(l.done)
	batch := make([]*[]byte, 0, maxBatch)
	lines := make([][]byte, 0, maxBatch)
	failing := false
	flush := func() {
		lines = lines[:0]
		for _, bp := range batch {
			lines = append(lines, *bp)
		}
		n, err := dest.write(lines)
		l.m.lines.Add(float64(n))
		if err != nil {
			l.m.writeErrors.Add(float64(len(lines) - n))
			if !failing {
				l.logger.Error("access log write failed; dropping lines until it works again", "err", err)
			}
		} else if failing {
			l.logger.Info("access log writes again")
		}
		failing = err != nil
		for _, bp := range batch {
			l.putBuf(bp)
		}
		batch = batch[:0]
	}
	// fill adds what is queued, without waiting, up to maxBatch.
	fill := func() {
		for len(batch) < maxBatch {
			select {
			case bp := <-l.queue:
				batch = append(batch, bp)
			default:
				return
			}
		}
	}
	for {
		select {
		case bp := <-l.queue:
			batch = append(batch, bp)
			fill()
			flush()
		case <-l.stop:
			for {
				fill()
				if len(batch) == 0 {
					return
				}
				flush()
			}
		}
	}
}

// Reopen closes the log file and opens its path anew, so that after
// logrotate renamed the file the lines go to a new one. The agent calls
// it on SIGHUP. If the path cannot be opened, lines keep going to the old
// file and the error says why. For the journal it does nothing.
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return fmt.Errorf("accesslog: reopen: %w", ErrClosed)
	}
	if err := l.dest.reopen(); err != nil {
		return fmt.Errorf("accesslog: reopen: %w", err)
	}
	return nil
}

// Close stops taking lines, waits up to Config.CloseTimeout for the
// writer to write those queued, and closes the destination. If the
// destination is stuck (a full pipe, a hung disk), the lines still queued
// are counted as write errors; a journal socket that blocks cannot be cut,
// and its writer is left to finish alone. Close is idempotent.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.closed.Store(true)
		close(l.stop)
		t := time.NewTimer(l.closeTimeout)
		defer t.Stop()
		select {
		case <-l.done:
			l.closeErr = l.dest.close()
			return
		case <-t.C:
		}
		l.logger.Warn("access log writer did not drain in time; cutting it off", "timeout", l.closeTimeout)
		// Closing the file fails the write under way and those after it.
		l.closeErr = l.dest.close()
		t.Reset(l.closeTimeout)
		select {
		case <-l.done:
		case <-t.C:
		}
	})
	return l.closeErr
}
