package tunnel

import (
	"sync"
	"time"
)

// workers runs inbound streams on goroutines kept from earlier streams.
// A per-request stream lives for one request: a fresh goroutine for each
// would grow a new stack, through the HTTP parser's depth, every time.
// An idle worker waits for the next stream for workerIdle, then exits.
type workers struct {
	work chan func()
	wg   *sync.WaitGroup // the tunnel's: a running worker counts in it
	done <-chan struct{} // closed when the tunnel closes: idle workers exit
}

// workerIdle is how long an idle worker waits for a stream.
const workerIdle = 10 * time.Second

func newWorkers(wg *sync.WaitGroup, done <-chan struct{}) *workers {
	return &workers{work: make(chan func()), wg: wg, done: done}
}

// run runs f on an idle worker, or on a new one.
func (w *workers) run(f func()) {
	select {
	case w.work <- f:
	default:
		w.wg.Add(1)
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		select {
		case f = <-w.work:
		case <-idle.C:
			return
		case <-w.done:
			return
		}
	}
}
