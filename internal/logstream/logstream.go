// Package logstream lets readers follow a process's log as it is written
// (the agent's GET /v1/agent/monitor), each at its own level, without ever
// slowing the process down: a reader that falls behind loses lines, which
// are counted, rather than making the logger wait.
//
// Wrap the process's slog.Handler with New, log through the result, and
// Subscribe readers to the Broker. With no reader, a record costs one
// atomic load more than the wrapped handler.
package logstream

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// DefaultBuffer is how many lines a subscription holds for a reader that
// is behind, before it drops the newest.
const DefaultBuffer = 512

// Broker fans log records out to its subscriptions. It is safe for
// concurrent use.
type Broker struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	// minLevel is the lowest level any subscription wants, or
	// noSubscribers; read without the lock on every record.
	minLevel atomic.Int64
}

const noSubscribers = int64(1 << 40)

// Subscription is one reader of the log. Lines receives the formatted
// lines (logfmt, as the text handler writes them, with a trailing
// newline); Dropped counts those the reader was too slow for.
type Subscription struct {
	b       *Broker
	level   slog.Level
	lines   chan []byte
	dropped atomic.Uint64
	once    sync.Once
}

// Lines delivers the lines. It is never closed: stop reading after Close.
func (s *Subscription) Lines() <-chan []byte { return s.lines }

// Dropped is the number of lines lost so far because the buffer was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription. It is idempotent.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.updateLocked()
		s.b.mu.Unlock()
	})
}

// Subscribe starts a subscription to the records at level and above,
// holding up to buffer lines for a slow reader (DefaultBuffer when 0).
func (b *Broker) Subscribe(level slog.Level, buffer int) *Subscription {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	s := &Subscription{b: b, level: level, lines: make(chan []byte, buffer)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.updateLocked()
	b.mu.Unlock()
	return s
}

func (b *Broker) updateLocked() {
	lowest := noSubscribers
	for s := range b.subs {
		lowest = min(lowest, int64(s.level))
	}
	b.minLevel.Store(lowest)
}

func (b *Broker) wants(l slog.Level) bool { return int64(l) >= b.minLevel.Load() }

// publish formats r once, with the attributes and groups of the handler
// that took it, and offers the line to every subscription that wants it.
func (b *Broker) publish(ctx context.Context, r slog.Record, ops []op) {
	var buf bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.Level(-1 << 10)})
	for _, o := range ops {
		if o.group != "" {
			h = h.WithGroup(o.group)
		} else {
			h = h.WithAttrs(o.attrs)
		}
	}
	if h.Handle(ctx, r) != nil {
		return
	}
	line := buf.Bytes()
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if r.Level < s.level {
			continue
		}
		select {
		case s.lines <- line:
		default:
			s.dropped.Add(1)
		}
	}
}

// op is one WithAttrs or WithGroup applied to a handler, replayed when a
// record is formatted for the subscriptions.
type op struct {
	group string
	attrs []slog.Attr
}

// Handler is an slog.Handler that passes records to the wrapped handler
// and to the broker's subscriptions.
type Handler struct {
	inner  slog.Handler
	broker *Broker
	ops    []op
}

// New wraps inner: records go to it as before, and to the subscriptions of
// the returned Broker.
func New(inner slog.Handler) (*Handler, *Broker) {
	b := &Broker{}
	b.minLevel.Store(noSubscribers)
	return &Handler{inner: inner, broker: b}, b
}

// Enabled reports whether the wrapped handler or a subscription wants
// records of level l.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l) || h.broker.wants(l)
}

// Handle passes r to the wrapped handler if it wants it, and to the
// subscriptions that do. It never blocks on a subscription.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.inner.Enabled(ctx, r.Level) {
		err = h.inner.Handle(ctx, r)
	}
	if h.broker.wants(r.Level) {
		h.broker.publish(ctx, r, h.ops)
	}
	return err
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(attrs), broker: h.broker, ops: append(h.ops[:len(h.ops):len(h.ops)], op{attrs: attrs})}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{inner: h.inner.WithGroup(name), broker: h.broker, ops: append(h.ops[:len(h.ops):len(h.ops)], op{group: name})}
}
