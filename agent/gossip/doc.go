// Package gossip is the membership and catalog replication layer of the
// agent. It runs hashicorp/memberlist (SWIM with Lifeguard) and carries, on
// top of it, every node's catalog.Record: full state by push/pull, changes by
// broadcast, and records too large for one UDP packet over streams. It
// publishes what it knows into a catalog.Store, one snapshot per change.
//
// # What travels where
//
//   - Node meta (memberlist's 512-byte alive message): the record version,
//     a liveness epoch, the server flag and a leaving flag. It is a version
//     notice: a node that sees a newer version than the record it holds pulls
//     the record from its owner.
//   - Broadcast (memberlist's TransmitLimitedQueue, piggybacked on probes
//     and gossip): records that fit in one packet, suspect and down notices,
//     keyring queries. Every node that learns something new re-queues it, so
//     news spreads epidemically instead of only from its origin.
//   - Streams (memberlist SendReliable, TCP): records larger than a packet,
//     pushed by their owner to a few random peers, each of which forwards a
//     new version once to a few more; pulls and keyring answers.
//   - Push/pull (memberlist LocalState/MergeRemoteState): the records of all
//     live nodes, the anti-entropy that repairs anything gossip missed.
//   - Pulls: a node whose meta notice announces a version it does not hold
//     after a grace period (PullDelay for large records, four times that for
//     small ones, with jitter) asks the owner over a stream, at most two
//     pulls per maintenance tick, so that many late nodes never storm one
//     owner.
//
// A record therefore costs one packet-sized broadcast per change, however
// many nodes there are, and a large one about StreamFanout streams per node;
// nothing is sent at rest but memberlist's probes and the periodic push/pull.
//
// Catalog snapshots are published at once for this node's own changes
// (SetLocal, Leave) and, for changes learned from the network, by a
// publisher goroutine at most every 5 ms, so that a burst of events costs
// one snapshot.
//
// The default transport is this package's NetTransport (UDP and TCP on one
// port); tests and the benchmark inject others through Deps.Transport.
//
// Messages are msgpack (github.com/hashicorp/go-msgpack/v2, the codec
// memberlist itself uses) with one-letter field names from the catalog's
// msgpack tags: a record of one service is about 80 bytes, so a change fits
// in a single gossip packet, and the codec is already linked in.
//
// # Member status
//
// memberlist v0.7 reports joins, updates and departures, but it does not say
// whether a departure was a graceful leave or a failure (the State of the
// Node it passes is never set), and it has no callback for suspicion. This
// package therefore derives the status itself:
//
//   - left: the node announced its departure (leaving flag in its meta and
//     record, which it broadcasts and also sends to every live member), and
//     the announcement reached this node before or after memberlist removed
//     it; failed: removed without that.
//   - suspect: memberlist reports a failed probe in its log ("Suspect X has
//     failed, no acks received"); the prober gossips a suspect notice that
//     every node shows until the suspected node refutes by raising its
//     liveness epoch (a meta update), memberlist declares it dead, or the
//     longest possible suspicion time passes.
//   - failed early: when a failed probe coincides with a refused TCP
//     connection to the node's gossip port (its kernel answered that nothing
//     listens there: the agent process is gone), the prober gossips a down
//     notice and every node marks the node failed at once. A node that is
//     merely slow or stopped still accepts TCP connections, so it only ever
//     goes through memberlist's suspicion timer, which is tuned long enough
//     to ride out a 2 s stall.
//
// The peer state machine behind these statuses is peerTable (peers.go): it
// reads no clock, every decision takes the time as an argument.
//
// # Finding the cluster again
//
// memberlist never contacts a node it declared dead or gone, so two groups
// that lost each other (every server restarted, a partition) stay apart
// unless someone joins across. Two loops do (join.go):
//
//   - rejoin: at start, and whenever this node is out of contact (no live
//     peer, or no live server while it knows servers), it tries RetryJoin and
//     a few reconnect candidates at once, backing off to RetryJoinMax.
//   - reconnect: every ReconnectInterval it tries one reconnect candidate: a
//     member that failed (for ReconnectTimeout), one that left (for
//     LeftReconnectTimeout: a graceful leave is most often a restart), or a
//     peer remembered in PeersFile and not seen since this start.
//
// PeersFile (peersfile.go) is what lets a node restarted while every
// RetryJoin address is down find the others, and a restarted server find
// the clients.
package gossip
