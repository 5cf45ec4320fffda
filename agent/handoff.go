package agent

import (
	"errors"
	"fmt"
	"slices"
)

// The steps of a handoff to a successor agent of the same node, which
// inherits the sockets (internal/sockets, docs/restart.md):
//
//  1. ReleaseExclusive, once the successor is prepared: gossip and Raft
//     stop, without a leave, so that the successor binds their ports and
//     opens Raft's files. The data plane, DNS and the API serve on.
//  2. StopAccepting, once the successor serves: the API and DNS close their
//     descriptors of the shared sockets, which the successor keeps open.
//  3. Drain, then Shutdown: the VIP listeners close the same way and the
//     connections in flight end, up to tunnel.drain_timeout.

// ReleaseExclusive stops the components that only one agent of a node may
// run at a time: gossip, which holds the gossip port and the node's name in
// the cluster, and Raft, which holds the server port and its files under
// data_dir. It does not leave the cluster: the successor takes the node's
// place. The catalog keeps its last snapshot, so the data plane routes on.
func (a *Agent) ReleaseExclusive() error {
	return a.closeOnly("raft", "gossip")
}

// StopAccepting closes the API and DNS servers: their sockets stay open in
// the successor, which answers from now on.
func (a *Agent) StopAccepting() error {
	return a.closeOnly("http", "dns")
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
		if err := c.close(); err != nil {
			errs = append(errs, fmt.Errorf("agent: close %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
