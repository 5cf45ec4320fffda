package logstream

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSubscriptionLevelsAndAttrs(t *testing.T) {
	var out bytes.Buffer
	h, b := New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log := slog.New(h).With("component", "gossip").WithGroup("g")

	log.Debug("before any subscriber")
	debug := b.Subscribe(slog.LevelDebug, 10)
	defer debug.Close()
	warn := b.Subscribe(slog.LevelWarn, 10)
	defer warn.Close()

	log.Debug("probe sent", "node", "n2")
	log.Warn("member suspected", "node", "n3")

	got := func(s *Subscription) []string {
		var lines []string
		for {
			select {
			case l := <-s.Lines():
				lines = append(lines, string(l))
			default:
				return lines
			}
		}
	}
	d := got(debug)
	if len(d) != 2 || !strings.Contains(d[0], `msg="probe sent"`) || !strings.Contains(d[0], "component=gossip") || !strings.Contains(d[0], "g.node=n2") {
		t.Fatalf("debug subscription got %q", d)
	}
	if w := got(warn); len(w) != 1 || !strings.Contains(w[0], "member suspected") {
		t.Fatalf("warn subscription got %q", w)
	}
	// The wrapped handler keeps its own level: no debug line in it.
	if s := out.String(); strings.Contains(s, "probe sent") || !strings.Contains(s, "member suspected") {
		t.Fatalf("the wrapped handler wrote %q", s)
	}
}

// TestSlowReaderDropsLines checks that a reader that does not read loses
// the lines past its buffer, counted, while the logger goes on.
func TestSlowReaderDropsLines(t *testing.T) {
	h, b := New(slog.DiscardHandler)
	log := slog.New(h)
	s := b.Subscribe(slog.LevelInfo, 4)
	for i := range 100 {
		log.Info("line", "i", i)
	}
	if got := s.Dropped(); got != 96 {
		t.Fatalf("dropped %d lines, want 96", got)
	}
	if first := string(<-s.Lines()); !strings.Contains(first, "i=0") {
		t.Fatalf("first line kept = %q", first)
	}
	s.Close()
	s.Close()
	if h.Enabled(t.Context(), slog.LevelInfo) {
		t.Fatal("enabled at info with no subscriber and a discarding handler")
	}
	log.Info("after close") // must not block or panic
}

func BenchmarkLogWithSubscriber(b *testing.B) {
	for _, subs := range []int{0, 1} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			h, br := New(slog.NewTextHandler(&bytes.Buffer{}, nil))
			for range subs {
				s := br.Subscribe(slog.LevelInfo, 1)
				defer s.Close()
			}
			log := slog.New(h)
			b.ReportAllocs()
			for b.Loop() {
				log.Info("request", "route", "/v1/agent/self", "code", 200)
			}
		})
	}
}
