package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/agent/config"
)

// TestShutdownIsBounded: a component that never finishes closing does not
// keep Shutdown from returning, and the error names it; the components
// stopped before it were closed in reverse order.
func TestShutdownIsBounded(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	var order []string
	a := &Agent{cfg: &config.Config{}, log: slog.New(slog.DiscardHandler), closeDone: make(chan struct{})}
	a.started = []component{
		{name: "raft", close: func() error { <-block; return nil }},
		{name: "dns", close: func() error { order = append(order, "dns"); return nil }},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := a.Shutdown(ctx)
	if !errors.Is(err, ErrCloseTimeout) || !strings.Contains(err.Error(), "raft") {
		t.Fatalf("Shutdown = %v, want ErrCloseTimeout naming raft", err)
	}
	if len(order) != 1 || order[0] != "dns" {
		t.Fatalf("closed %v before raft, want [dns]", order)
	}
}

// TestShutdownReturnsCloseError: when every component stops in time,
// Shutdown returns what Close returned, and a second Shutdown the same.
func TestShutdownReturnsCloseError(t *testing.T) {
	boom := errors.New("boom")
	a := &Agent{cfg: &config.Config{}, log: slog.New(slog.DiscardHandler), closeDone: make(chan struct{})}
	a.started = []component{{name: "dns", close: func() error { return boom }}}
	for i := range 2 {
		if err := a.Shutdown(context.Background()); !errors.Is(err, boom) {
			t.Fatalf("Shutdown #%d = %v, want boom", i+1, err)
		}
	}
}
