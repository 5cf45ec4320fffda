package testnet

import (
	"testing"
	"time"
)

// pollEvery is how often Eventually checks its condition.
const pollEvery = 10 * time.Millisecond

// Eventually checks cond every 10 ms until it returns nil, and fails the
// test once timeout has passed, naming what it waited for and cond's last
// error. It is the one way a test waits for a state it cannot be told of:
// cond says why it does not hold yet, so that a timeout explains itself.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		<-tick.C
	}
}

// Holds adapts a boolean condition to Eventually: its error only says that
// the condition does not hold yet.
func Holds(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}

type notYet struct{}

func (notYet) Error() string { return "condition not met yet" }

var errNotYet error = notYet{}
