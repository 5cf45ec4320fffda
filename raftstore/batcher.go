package raftstore

import (
	"context"
	"errors"
	"sync"
	"time"
)

// batcher groups concurrent writes into one unit of work: one Raft log
// entry on the leader, one RPC on an agent that forwards to the leader. It
// keeps a bounded number of units in flight: while they complete, new
// writes queue and leave together in the next unit, so throughput grows
// with load while a lone write still leaves at once.
type batcher struct {
	max      int
	send     func(ctx context.Context, txns []Txn) ([]TxnResult, error)
	observe  func(n int) // batch sizes, may be nil
	ch       chan *pending
	inflight chan struct{}
	wg       sync.WaitGroup
}

type pending struct {
	ctx  context.Context
	txn  Txn
	done chan applyResult
}

type applyResult struct {
	index uint64
	err   error
}

// maxInflight bounds the units in flight.
const maxInflight = 8

func newBatcher(max int, send func(context.Context, []Txn) ([]TxnResult, error), observe func(int)) *batcher {
	return &batcher{max: max, send: send, observe: observe, ch: make(chan *pending, 4*max), inflight: make(chan struct{}, maxInflight)}
}

// submit queues txn and waits for its result or ctx's end. A write whose
// caller gave up may still be applied.
func (b *batcher) submit(ctx context.Context, txn Txn) (uint64, error) {
	p := &pending{ctx: ctx, txn: txn, done: make(chan applyResult, 1)}
	select {
	case b.ch <- p:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case r := <-p.done:
		return r.index, r.err
	case <-ctx.Done():
	}
	// The batch ends at the earliest deadline of its callers, so its own
	// answer (which says why, such as ErrNoLeader) is due now.
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case r := <-p.done:
		if r.err != nil {
			return 0, r.err
		}
		return r.index, nil
	case <-t.C:
		return 0, ctx.Err()
	}
}

// batchContext ends when the first caller of the batch gives up: its
// deadline is the earliest of theirs.
func batchContext(batch []*pending) (context.Context, context.CancelFunc) {
	var earliest time.Time
	for _, p := range batch {
		if dl, ok := p.ctx.Deadline(); ok && (earliest.IsZero() || dl.Before(earliest)) {
			earliest = dl
		}
	}
	if earliest.IsZero() {
		return context.WithCancel(context.Background())
	}
	return context.WithDeadline(context.Background(), earliest)
}

// run sends batches until ctx ends, then fails what is still queued and
// waits for the batches in flight.
func (b *batcher) run(ctx context.Context) {
	defer b.wg.Wait()
	for {
		var first *pending
		select {
		case first = <-b.ch:
		case <-ctx.Done():
			b.failQueued()
			return
		}
		select {
		case b.inflight <- struct{}{}:
		case <-ctx.Done():
			first.done <- applyResult{err: ErrClosed}
			b.failQueued()
			return
		}
		batch := []*pending{first}
	drain:
		for len(batch) < b.max {
			select {
			case p := <-b.ch:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		if b.observe != nil {
			b.observe(len(batch))
		}
		txns := make([]Txn, len(batch))
		for i, p := range batch {
			txns[i] = p.txn
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			ctx, cancel := batchContext(batch)
			res, err := b.send(ctx, txns)
			cancel()
			<-b.inflight
			for i, p := range batch {
				switch {
				case err != nil:
					p.done <- applyResult{err: err}
				case i >= len(res):
					p.done <- applyResult{err: errors.New("raftstore: missing result")}
				case res[i].Err != nil:
					p.done <- applyResult{err: res[i].Err}
				default:
					p.done <- applyResult{index: res[i].Index}
				}
			}
		}()
	}
}

func (b *batcher) failQueued() {
	for {
		select {
		case p := <-b.ch:
			p.done <- applyResult{err: ErrClosed}
		default:
			return
		}
	}
}
