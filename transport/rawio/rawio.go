// Package rawio reads and writes the agent's sockets with raw system
// calls, waiting for readiness through the Go runtime's poller as the net
// package does.
//
// A read or write through the net package tells the Go scheduler that the
// goroutine entered a system call. When the call outlasts a scheduler tick
// (20 µs, and system calls are slow on a paravirtualised guest), the
// runtime hands the thread's P to another thread, and the caller's thread
// must win a P back afterwards: two thread wake-ups on the request's path.
// The sockets are non-blocking, so a raw call returns at once and the
// goroutine keeps its P. At 1,000 req/s this takes about 30 % off the
// agents' CPU (docs/benchmarks.md).
//
// Setting MESHWORK_RAWIO=0 in the agent's environment turns it off, and
// the agent then uses the net package's calls.
package rawio

import "os"

// Enabled reports whether raw calls are in use (MESHWORK_RAWIO is not "0").
var Enabled = os.Getenv("MESHWORK_RAWIO") != "0"
