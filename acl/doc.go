// Package acl is the access control of Meshwork's APIs: policies of rules,
// tokens that link them, and the authorizer that decides each request.
//
// It is self-contained: it knows nothing of Raft or HTTP. A Store holds the
// tokens and policies (MemStore here; the Raft-replicated state in the
// agent, applying State's rules so that every store makes the same
// decisions). A Resolver turns the secret a request presents into the
// Authorizer of its token. Pure helpers read a token from a request the same
// way for the API and the CLI.
//
// # Policies
//
// A policy is a named set of rules, in YAML (or JSON):
//
//	name: web-deploy
//	description: CI deploys the web service and reads the rest
//	rules:
//	  service:
//	    web: write
//	  service_prefix:
//	    "": read
//	  policy:
//	    Split: write
//	  intention:
//	    web: write
//	  agent: read
//
// Each rule gives a level: read, write (which includes read) or deny
// (which refuses both, whatever the default policy says). Names are matched
// case-insensitively, as the catalog matches service names.
//
// # Resources and what each level allows
//
//	section                   key                      read                                write
//	service, service_prefix   service name or prefix   its catalog and health entries,     register and deregister it, update
//	                                                   the agent's definition of it         its checks (and, for an agent's
//	                                                                                        token, hold its identity)
//	intention,                destination service      read its Intention document         apply or delete it
//	intention_prefix          (exact "*" is the
//	                          wildcard document)
//	policy                    document kind, or "*"    read documents of that kind         apply or delete them
//	                          for every kind but
//	                          Intention
//	node, node_prefix         node name or prefix      its catalog entry                   its node-level registration and
//	                                                                                        checks (an agent's own token)
//	operator                  raft                     list the Raft peers                 remove a peer
//	                          snapshot                 save a snapshot (all of the         restore a snapshot
//	                                                   replicated state: grant it as
//	                                                   carefully as write)
//	                          keyring                  list the gossip keys' fingerprints  install, use and remove keys
//	ca                        roots                    the trust bundle, rotation status   (not allowed: see rotate)
//	                                                   (the API serves them to anyone)
//	                          leaf                     the agent's leaf (never its key)    (not allowed)
//	                          token                    (not allowed)                       mint a node's bootstrap token
//	                          rotate                   (not allowed)                       rotate the roots
//	acl                       (a single level)         tokens (never secrets), policies    create, change and delete them:
//	                                                                                        as strong as a management token
//	agent                     (a single level)         the agent's self, tunnel status,    reserved for the agent's own
//	                                                   metrics, policy status              actions
//
// A level that means nothing for a CA action (read of token, write of
// roots) is refused when the policy is parsed, with the fix. IntentionDefaults
// and ServiceIdentity are mesh-wide switches: write on them is as strong as
// write on every intention.
//
// # Which rule decides
//
// For one request, the rules of all the token's policies are considered:
// an exact rule (service) beats every prefix rule (service_prefix); among
// prefixes the longest wins; when rules of the same specificity meet (the
// same name in two policies) deny beats write beats read. When no rule
// matches, the default policy decides: deny (the default) or allow.
// Management tokens may do everything.
//
// # Tokens
//
// A token has an accessor ID (a UUID, public: it names the token in logs,
// errors and the API) and a secret (mwt_ followed by 43 characters of
// base64url: 256 random bits). Only the secret's SHA-256 is stored. A fast
// hash is enough because the secret is random, not chosen by a person: no
// dictionary guesses it, and a slow KDF would cost milliseconds on every
// request. The store looks tokens up by that hash; the hash found is then
// compared with the presented one in constant time.
//
// A request without a token is the anonymous token's. It links the builtin
// policy builtin-catalog-read (service_prefix "" read, node_prefix "" read),
// so that catalog reads stay open as DNS is; an operator may relink it.
//
// A token may expire; its expiry is checked on every request against the
// injected clock, with a leeway of at most five seconds for clock skew.
//
// # Passing a token
//
// The API reads the X-Meshwork-Token header or `Authorization: Bearer`
// (both may be sent if they agree) and refuses a token in the URL. The CLI
// takes --token, --token-file or MESHWORK_HTTP_TOKEN and sends the header.
// Errors name what is wrong and never repeat the value.
//
// # Which endpoint needs what
//
// Each endpoint declares its Requirement where it is mounted (MountFunc);
// the agent's HTTP API enforces it. The agent's route test calls every
// mounted route, and keeps this table honest.
//
//	GET  /v1/agent/self, /v1/agent/tunnel,
//	     /v1/metrics, /v1/policy/status                 agent:read
//	GET  /v1/agent/members                             node:read (filtered)
//	GET  /v1/agent/services, /v1/agent/service/<id>,
//	     /v1/agent/checks                              service:read (lists filtered)
//	PUT  /v1/agent/service/register, deregister/<id>,
//	     /v1/agent/check/...                           service:write on the service
//	GET  /v1/catalog/services, /v1/catalog/service/<s>,
//	     /v1/health/service/<s>                        service:read (lists filtered)
//	GET  /v1/catalog/nodes                             node:read (filtered)
//	GET  /v1/policy, /v1/policy/<kind>/<name>          policy:read on the kind, or
//	                                                   intention:read on an Intention's name
//	                                                   (the list filtered)
//	PUT  /v1/policy, DELETE /v1/policy/<kind>/<name>   the same with write, for every document
//	GET / DELETE /v1/operator/raft/peers               operator:read / operator:write on raft
//	GET / PUT /v1/snapshot                             operator:read / operator:write on snapshot
//	GET / POST, PUT, DELETE /v1/operator/keyring       operator:read / operator:write on keyring
//	GET  /v1/ca/roots                                  anyone: the trust bundle is public
//	GET  /v1/ca/leaf                                   ca:read on leaf
//	POST /v1/ca/token, /v1/ca/rotate                   ca:write on token, on rotate
//	PUT  /v1/acl/bootstrap                             no token: once only
//	GET  /v1/acl/token/self                            any token that resolves
//	/v1/acl/... (the others)                           acl:read or acl:write
package acl
