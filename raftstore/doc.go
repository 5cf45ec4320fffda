// Package raftstore replicates the mesh's policy and the CA's state with
// hashicorp/raft on the server agents, and keeps a copy of the policy on
// every agent.
//
// One Node runs on every agent. On a server agent (Config.Server) it also
// runs a Raft peer: an FSM holding policy documents and an internal
// key/value namespace, a durable log (boltlog) and file snapshots in the
// data directory, automatic bootstrap from gossip, and an autopilot that
// adds, promotes and removes servers. Servers listen on one TCP port
// (7947) where, after a mutual TLS handshake, ALPN picks either the Raft
// stream layer (meshwork-raft/1) or an HTTP server of RPC routes
// (meshwork-rpc/1). Every agent, server or client, reaches the servers with
// an RPCClient over that port: writes are forwarded to the leader, and a
// Replica streams the policy from a server, applies each change atomically
// by index, persists it, and serves it lock-free to the data plane.
//
// Dependencies point one way: raftstore imports policy, catalog and
// internal packages, never agent.
package raftstore
