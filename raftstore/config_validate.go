package raftstore

import (
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/keytls"
)

// The rules of the fields an operator sets, one function each. Validate
// applies them to a Config, and agent/config to the configuration file,
// naming the YAML key; their errors say what is wrong with the value and
// name no field, so that each caller adds its own name for it.

// CheckBootstrapExpect checks the number of servers that bootstrap the
// cluster together, for a server or (server false) a client agent.
func CheckBootstrapExpect(server bool, n int) error {
	switch {
	case n == 0:
		return nil
	case !server:
		return fmt.Errorf("%d is for servers only: only servers bootstrap the cluster; set server: true or remove it", n)
	case n != 1 && n != 3 && n != 5:
		return fmt.Errorf("%d must be 1, 3 or 5 (or 0 to join an existing cluster): an even count adds no fault tolerance", n)
	}
	return nil
}

// checkClusterKey checks the decoded cluster key; keytls.DecodeKey checks
// the key as written.
func checkClusterKey(key []byte) error {
	if len(key) != keytls.KeySize {
		return fmt.Errorf("is %d bytes, want %d", len(key), keytls.KeySize)
	}
	return nil
}

// CheckServerKey checks the decoded server key of a server or (server
// false) a client agent, beside the decoded cluster key; keytls.DecodeKey
// checks the key as written. It never repeats a key.
func CheckServerKey(server bool, serverKey, clusterKey []byte) error {
	switch {
	case serverKey == nil:
		return nil
	case !server:
		return errors.New("is only for servers: whoever holds it can act as a server, so a client agent must never have it; remove it from this agent's configuration (or set server: true)")
	case len(serverKey) != keytls.KeySize:
		return fmt.Errorf("is %d bytes, want %d", len(serverKey), keytls.KeySize)
	case subtle.ConstantTimeCompare(serverKey, clusterKey) == 1:
		return errors.New("is the same key as cluster_key, which every agent holds; make a key of its own with `meshwork keygen`")
	}
	return nil
}

// CheckInitialManagement checks the secret of the initial management
// token, which only a server's leader makes. It never repeats the secret.
func CheckInitialManagement(server bool, secret string) error {
	switch {
	case secret == "":
		return nil
	case !server:
		return errors.New("is only for servers, whose leader makes it into a token; set server: true or remove it")
	}
	if err := acl.CheckSecret("the value", secret); err != nil {
		return fmt.Errorf("%w (make one with `meshwork acl secret`)", err)
	}
	return nil
}
