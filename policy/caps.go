package policy

import (
	"errors"
	"fmt"
)

// Caps on the whole policy. Every agent holds the whole set in memory, and
// every change sends the whole set to every agent, so the set's size is a
// cost paid on every host of the mesh. The servers check the caps where a
// write is decided (the Raft state machine), so they are constants, the
// same on every server: a setting could differ between servers and make
// them decide differently. docs/benchmarks.md ("Policy caps") has the
// measurements they were chosen from; docs/policy.md explains them.
//
// At the caps, a client agent holds about 20 MB more than idle and a
// server at most about 45 MB more (less than half of what 12,000 documents
// cost), and each change sends at most 1 MiB to every agent.
const (
	// MaxTotalDocuments is the most documents the policy may hold: room
	// for a mesh of a thousand services with a few documents each. With
	// documents of a typical mix (about 170 bytes of JSON each) it is the
	// cap that binds first.
	MaxTotalDocuments = 5000
	// MaxTotalBytes bounds the total encoded size of the documents
	// (EncodedSize), 1 MiB: the cap that binds first for large documents,
	// whose memory grows with their bytes rather than their number.
	MaxTotalBytes = 1 << 20
)

// ErrCapExceeded is wrapped by the error of a write that would take the
// policy past MaxTotalDocuments or MaxTotalBytes.
var ErrCapExceeded = errors.New("policy cap exceeded")

// Cap names, in CapError.
const (
	CapDocuments = "documents"
	CapBytes     = "total size"
)

// CapError says which cap a write would break: the cap, the figure the
// policy has now, and what the write would make it.
type CapError struct {
	// Cap is CapDocuments or CapBytes.
	Cap string
	// Limit is the cap's value.
	Limit int64
	// Current is the figure before the write; After what the write would
	// make it.
	Current, After int64
}

func (e *CapError) Error() string {
	unit := ""
	if e.Cap == CapBytes {
		unit = " bytes"
	}
	return fmt.Sprintf("%v: %s: the policy holds %d%s and this write would make it %d%s, over the cap of %d%s; delete documents or make them smaller",
		ErrCapExceeded, e.Cap, e.Current, unit, e.After, unit, e.Limit, unit)
}

// Unwrap returns ErrCapExceeded.
func (e *CapError) Unwrap() error { return ErrCapExceeded }

// EncodedSize is what a document counts for against MaxTotalBytes: the
// length of its JSON (MarshalJSON, as json.Marshal writes it), the form the
// servers store and send. It depends only on the document, so every server
// computes the same.
func EncodedSize(d *Document) int64 {
	b, err := d.MarshalJSON() // compact already: json.Marshal's pass over it would change nothing
	if err != nil {
		// A document that cannot be encoded cannot be stored either;
		// it counts for nothing here and fails where it is written.
		return 0
	}
	return int64(len(b))
}

// CheckCaps returns a *CapError when a change that takes the policy from
// count documents of size bytes to newCount of newSize grows a figure past
// its cap. A policy already past a cap (written before the caps, or
// restored from a backup) stays readable and may shrink: only growth of a
// figure that is or would be over its cap is refused.
func CheckCaps(count, size, newCount, newSize int64) error {
	if newCount > MaxTotalDocuments && newCount > count {
		return &CapError{Cap: CapDocuments, Limit: MaxTotalDocuments, Current: count, After: newCount}
	}
	if newSize > MaxTotalBytes && newSize > size {
		return &CapError{Cap: CapBytes, Limit: MaxTotalBytes, Current: size, After: newSize}
	}
	return nil
}
