// Package history records the operations that clients make on a store of
// registers (a key and its latest value) while faults happen, and checks
// them for linearizability with porcupine. Fault tests use it to show that
// no acknowledged write was lost and that no read saw a value it could not
// have seen, without reasoning about the history by hand.
//
// A write ends in one of three ways. Acknowledged: it took effect between
// its call and its return. Failed: the store said for certain that it did
// not take effect. Unknown: the store could not say (a timeout, a lost
// leader); it may take effect at any moment after its call, or never. A
// failed write whose value is read later is a violation, which is how the
// checker catches a store that reports "failed" for a write it applied.
package history

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is how an operation ended.
type Outcome int

const (
	// OK: the write was acknowledged, or the read answered.
	OK Outcome = iota
	// Failed: the operation certainly did not take effect. A failed read
	// is left out of the history.
	Failed
	// Unknown: the write may or may not take effect. An unknown read is
	// left out of the history.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// ErrNotLinearizable is returned by Check when no order of the operations
// explains what the clients saw.
var ErrNotLinearizable = errors.New("history is not linearizable")

// input is one operation's call: a read when write is false.
type input struct {
	write bool
	key   string
	value string
}

// output is what the operation returned.
type output struct {
	outcome Outcome
	found   bool // reads: the key existed
	value   string
}

// Recorder collects operations from concurrent clients. Its methods are
// safe for concurrent use.
type Recorder struct {
	start time.Time

	mu  sync.Mutex
	ops []porcupine.Operation
}

// NewRecorder returns an empty history whose clock starts now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Op is an operation in flight; end it with Done (writes) or Read (reads).
type Op struct {
	r      *Recorder
	client int
	in     input
	call   int64
	once   sync.Once
}

// Write records the call of a write of value to key by client (a small
// integer, one per concurrent client).
func (r *Recorder) Write(client int, key, value string) *Op {
	return &Op{r: r, client: client, in: input{write: true, key: key, value: value}, call: r.now()}
}

// Read records the call of a read of key by client.
func (r *Recorder) Read(client int, key string) *Op {
	return &Op{r: r, client: client, in: input{key: key}, call: r.now()}
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

// Done ends a write with its outcome. Only the first call counts.
func (o *Op) Done(outcome Outcome) {
	o.end(output{outcome: outcome})
}

// Answer ends a read that answered: found reports whether the key existed
// and value is what it held. Only the first call counts.
func (o *Op) Answer(found bool, value string) {
	o.end(output{outcome: OK, found: found, value: value})
}

// Fail ends a read that got no answer; it is left out of the history.
func (o *Op) Fail() { o.end(output{outcome: Failed}) }

func (o *Op) end(out output) {
	o.once.Do(func() {
		ret := o.r.now()
		if !o.in.write && out.outcome != OK {
			return // a read without an answer tells nothing
		}
		if o.in.write && out.outcome == Unknown {
			// It may take effect at any time after its call.
			ret = math.MaxInt64
		}
		o.r.mu.Lock()
		o.r.ops = append(o.r.ops, porcupine.Operation{ClientId: o.client, Input: o.in, Call: o.call, Output: out, Return: ret})
		o.r.mu.Unlock()
	})
}

// Stats counts the recorded operations by kind and outcome.
type Stats struct {
	WritesOK, WritesFailed, WritesUnknown, Reads int
}

// Stats returns the counts of the operations recorded so far.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s Stats
	for _, op := range r.ops {
		in, out := op.Input.(input), op.Output.(output)
		switch {
		case !in.write:
			s.Reads++
		case out.outcome == OK:
			s.WritesOK++
		case out.outcome == Failed:
			s.WritesFailed++
		default:
			s.WritesUnknown++
		}
	}
	return s
}

// Acknowledged returns, for each key, the values of its acknowledged
// writes in the order their calls were made.
func (r *Recorder) Acknowledged() map[string][]string {
	r.mu.Lock()
	ops := append([]porcupine.Operation(nil), r.ops...)
	r.mu.Unlock()
	sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	out := make(map[string][]string)
	for _, op := range ops {
		in, o := op.Input.(input), op.Output.(output)
		if in.write && o.outcome == OK {
			out[in.key] = append(out[in.key], in.value)
		}
	}
	return out
}

// Check verifies the history. It returns nil when it is linearizable,
// ErrNotLinearizable (with the keys whose histories are not) when it is not,
// and an error when the checker ran out of time. With vizPath set, a
// violation also writes porcupine's HTML visualisation there.
func (r *Recorder) Check(timeout time.Duration, vizPath string) error {
	r.mu.Lock()
	ops := append([]porcupine.Operation(nil), r.ops...)
	r.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(registers, ops, timeout)
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		return fmt.Errorf("history: check of %d operations did not finish in %s", len(ops), timeout)
	}
	var bad []string
	for key, part := range byKey(ops) {
		if !porcupine.CheckOperations(registers, part) {
			bad = append(bad, key)
		}
	}
	sort.Strings(bad)
	err := fmt.Errorf("%w: keys %s", ErrNotLinearizable, strings.Join(bad, ", "))
	if vizPath != "" {
		if f, ferr := os.Create(vizPath); ferr == nil {
			_ = porcupine.Visualize(registers, info, f)
			f.Close()
			err = fmt.Errorf("%w (visualisation: %s)", err, vizPath)
		}
	}
	return err
}

func byKey(ops []porcupine.Operation) map[string][]porcupine.Operation {
	m := make(map[string][]porcupine.Operation)
	for _, op := range ops {
		k := op.Input.(input).key
		m[k] = append(m[k], op)
	}
	return m
}

// register is the state of one key: whether it exists and its value.
type register struct {
	found bool
	value string
}

// registers is the sequential specification: independent registers, so the
// history is checked one key at a time.
var registers = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		m := byKey(h)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, m[k])
		}
		return out
	},
	Init: func() any { return register{} },
	Step: func(state, in, out any) (bool, any) {
		s, i, o := state.(register), in.(input), out.(output)
		if i.write {
			if o.outcome == Failed {
				return true, s // it did not happen
			}
			return true, register{found: true, value: i.value}
		}
		return o.found == s.found && (!o.found || o.value == s.value), s
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(input), out.(output)
		if i.write {
			return fmt.Sprintf("put(%s, %s) %s", i.key, i.value, o.outcome)
		}
		if !o.found {
			return fmt.Sprintf("get(%s) -> none", i.key)
		}
		return fmt.Sprintf("get(%s) -> %s", i.key, o.value)
	},
	DescribeState: func(state any) string {
		s := state.(register)
		if !s.found {
			return "none"
		}
		return s.value
	},
}
