package l4

import (
	"context"
	"testing"
	"time"

	"github.com/meshwork/meshwork/transport/wire"
)

func TestHoldFor(t *testing.T) {
	t.Run("no budget", func(t *testing.T) {
		const d = 5 * time.Millisecond
		t0 := time.Now()
		if r := holdFor(context.Background(), d, t0, 0); r != nil {
			t.Fatalf("refused: %+v", r)
		}
		if el := time.Since(t0); el < d {
			t.Fatalf("held %v, less than the delay %v", el, d)
		}
	})
	t.Run("budget shorter than the delay", func(t *testing.T) {
		start := time.Now()
		r := holdFor(context.Background(), time.Hour, start, 10*time.Millisecond)
		if r == nil || r.Code != wire.CodeDeadlineExceeded {
			t.Fatalf("holdFor = %+v, want %s", r, wire.CodeDeadlineExceeded)
		}
		if el := time.Since(start); el < 10*time.Millisecond {
			t.Fatalf("refused after %v, before the budget ran out", el)
		}
	})
	t.Run("budget already spent", func(t *testing.T) {
		r := holdFor(context.Background(), time.Hour, time.Now().Add(-time.Second), time.Millisecond)
		if r == nil || r.Code != wire.CodeDeadlineExceeded {
			t.Fatalf("holdFor = %+v, want %s", r, wire.CodeDeadlineExceeded)
		}
	})
	t.Run("agent closing", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if r := holdFor(ctx, time.Hour, time.Now(), time.Hour); r != nil {
			t.Fatalf("holdFor = %+v after ctx ended, want nil (the stream is aborted)", r)
		}
	})
}
