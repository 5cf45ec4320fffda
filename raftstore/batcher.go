package raftstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/acl"
)

// batcher groups concurrent writes into one unit of work: one Raft log
// entry on the leader, one RPC on an agent that forwards to the leader. It
// keeps a bounded number of units in flight: while they complete, new
// writes queue and leave together in the next unit, so throughput grows
// with load while a lone write still leaves at once.
type batcher struct {
	max int
	// send carries txns, with the ACL secret each write's caller presented
	// ("" for none).
	send     func(ctx context.Context, txns []Txn, secrets []string) ([]TxnResult, error)
	observe  func(n int) // batch sizes, may be nil
	ch       chan *pending
	inflight chan struct{}
	wg       sync.WaitGroup
}

type pending struct {
	ctx  context.Context
	txn  Txn
	done chan applyResult
	// state moves once from queued to sent (run took it into a batch) or
	// to abandoned (its caller gave up first): a write that never left can
	// be reported as not applied, one that left cannot.
	state atomic.Int32
}

// States of a pending write.
const (
	pendingQueued = iota
	pendingSent
	pendingAbandoned
)

type applyResult struct {
	index uint64
	err   error
}

// maxInflight bounds the units in flight.
const maxInflight = 8

func newBatcher(max int, send func(context.Context, []Txn, []string) ([]TxnResult, error), observe func(int)) *batcher {
	return &batcher{max: max, send: send, observe: observe, ch: make(chan *pending, 4*max), inflight: make(chan struct{}, maxInflight)}
}

// submit queues txn and waits for its result or ctx's end. When ctx ends
// first, a write still queued is dropped (ctx's error: not applied), and
// one already sent is ErrOutcomeUnknown unless its answer comes at once.
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
	if p.state.CompareAndSwap(pendingQueued, pendingAbandoned) {
		return 0, ctx.Err()
	}
	// The batch ends at the earliest deadline of its callers, so its own
	// answer (which says why, such as ErrNoLeader) is due now: at most
	// deadlineGrace later, when an RPC attempt was in flight.
	t := time.NewTimer(deadlineGrace + 150*time.Millisecond)
	defer t.Stop()
	select {
	case r := <-p.done:
		return r.index, r.err
	case <-t.C:
		return 0, fmt.Errorf("%w: the deadline passed with the write in flight (%v)", ErrOutcomeUnknown, ctx.Err())
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
		var batch []*pending
		take := func(p *pending) {
			// A write whose caller gave up while it was queued never leaves.
			if p.state.CompareAndSwap(pendingQueued, pendingSent) {
				batch = append(batch, p)
			}
		}
		take(first)
	drain:
		for len(batch) < b.max {
			select {
			case p := <-b.ch:
				take(p)
			default:
				break drain
			}
		}
		if len(batch) == 0 {
			<-b.inflight
			continue
		}
		if b.observe != nil {
			b.observe(len(batch))
		}
		txns, secrets := make([]Txn, len(batch)), make([]string, len(batch))
		for i, p := range batch {
			txns[i], secrets[i] = p.txn, acl.SecretFromContext(p.ctx)
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			ctx, cancel := batchContext(batch)
			res, err := b.send(ctx, txns, secrets)
			cancel()
			<-b.inflight
			for i, p := range batch {
				switch {
				case err != nil:
					p.done <- applyResult{err: err}
				case i >= len(res):
					p.done <- applyResult{err: fmt.Errorf("%w: no result for the write", ErrOutcomeUnknown)}
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
