// Package ca is Meshwork's mesh certificate authority and the agent-side
// certificate manager, built on smallstep/certificates.
//
// On server agents a Server runs an embedded smallstep authority
// (authority.NewEmbedded). Its roots, intermediate, JWK bootstrap provisioner
// and the ledger of used bootstrap tokens live in the replicated state (a
// StateStore, backed by Raft in the agent), so that any server can sign and a
// new leader carries on where the old one stopped. Private keys in that state
// are sealed with a key only servers hold (ServerConfig.StateKey).
//
// On every agent a Manager holds the node's X.509 identity: an ECDSA P-256
// key generated locally (only a CSR leaves the host) and a short-lived leaf
// whose URI SANs are spiffe://<trust-domain>/node/<node> and one
// spiffe://<trust-domain>/svc/<service> per local service that the server
// lets it hold (its gossip record registers the service, the ServiceIdentity
// policy allows its node, and with ACLs the agent token sent with the request
// may write the service; see TokenAuthorizer). It bootstraps with
// a one-time token, renews over mTLS at about two thirds of the lifetime,
// follows the trust bundle published in the replicated state, and gives the
// data plane GetCertificate, GetClientCertificate and VerifyPeer so that a
// rotation applies without restarting listeners.
//
// Root rotation is cross-signed: the new intermediate is also signed by the old
// root, so a leaf under the new root verifies against an old bundle and a new
// one alike. The old root is retired once every live node holds a leaf under
// the new one (servers record the root of each node's latest leaf).
//
// With provider "step-ca" the Manager obtains its leaves from an external
// step-ca through smallstep's ca client package instead (StepCA).
//
// docs/pki.md describes the design and its operation.
package ca
