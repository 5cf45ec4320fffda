package agent

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// The steps of a handoff to a successor agent of the same node, which
// inherits the sockets (internal/sockets, docs/restart.md):
//
//  1. ReleaseExclusive, once the successor is prepared: the tunnel, Raft
//     and gossip stop, without a leave, so that the successor binds their
//     ports and opens Raft's files. The VIP listeners close with the
//     tunnel: their sockets, held by the successor too, queue new
//     connections until it accepts them. DNS and the API serve on.
//  2. StopAccepting, once the successor serves: the API closes its
//     listener and DNS stops; the successor answers from now on.
//  3. Shutdown: the API answers the requests it accepted already.
//
// The tunnel stops at step 1, not after a drain, because two QUIC
// endpoints cannot share one UDP socket: each would read the other's
// packets and answer them with stateless resets. The calls the tunnel
// carries at that moment are cut (docs/restart.md).

// ReleaseExclusive stops the components that only one agent of a node may
// run at a time: the tunnel, whose QUIC endpoint must be the only reader
// of the tunnel socket; Raft, which holds the server port and its files
// under data_dir; and gossip, which holds the gossip port and the node's
// name in the cluster. It does not leave the cluster: the successor takes
// the node's place.
func (a *Agent) ReleaseExclusive() error {
	return a.closeOnly("tunnel", "raft", "gossip")
}

// StopAccepting closes the API's listener and the DNS server: their
// sockets stay open in the successor, which answers from now on. The API
// answers the connections it accepted already until Shutdown.
func (a *Agent) StopAccepting() error {
	return errors.Join(a.http.StopAccepting(), a.closeOnly("dns"))
}

// closeOnly closes the started components named, in the order given, and
// removes them from those Close will stop.
func (a *Agent) closeOnly(names ...string) error {
	var errs []error
	for _, name := range names {
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			return nil
		}
		i := slices.IndexFunc(a.started, func(c component) bool { return c.name == name })
		if i < 0 {
			a.mu.Unlock()
			continue
		}
		c := a.started[i]
		a.started = slices.Delete(slices.Clone(a.started), i, i+1)
		a.mu.Unlock()
		start := time.Now()
		if err := c.close(); err != nil {
			errs = append(errs, fmt.Errorf("agent: close %s: %w", name, err))
		}
		a.log.Debug("component closed for a successor", "component", name, "took", time.Since(start))
	}
	return errors.Join(errs...)
}
