package config

import (
	"crypto/subtle"
	"fmt"

	"github.com/meshwork/meshwork/internal/keytls"
)

// validateAcceptKeys checks accept_cluster_keys and accept_server_keys:
// each entry a key, none a key already in use or listed twice, at most
// keytls.MaxAcceptKeys each. The errors name entries by their path, never
// by their value: they are secrets.
func (c *Config) validateAcceptKeys() []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	// inUse are the keys an entry must not repeat, by the path that holds
	// them; entries checked so far join them.
	type held struct{ path, key string }
	var inUse []held
	for _, h := range []held{{"cluster_key", c.ClusterKey}, {"server_key", c.ServerKey}} {
		if h.key != "" {
			inUse = append(inUse, h)
		}
	}
	check := func(field string, keys []string) {
		if len(keys) > keytls.MaxAcceptKeys {
			bad(field, "lists %d keys, at most %d: a rotation needs one", len(keys), keytls.MaxAcceptKeys)
		}
		for i, k := range keys {
			path := fmt.Sprintf("%s[%d]", field, i)
			if _, err := keytls.DecodeKey(k); err != nil {
				bad(path, "%v", err)
				continue
			}
			for _, h := range inUse {
				if !sameKey(k, h.key) {
					continue
				}
				switch h.path {
				case "cluster_key", "server_key":
					bad(path, "is the key in use as %s: list only other keys here (the old one during a rotation)", h.path)
				default:
					bad(path, "is the same key as %s: list each key once, and never a server key together with a cluster key", h.path)
				}
				break
			}
			inUse = append(inUse, held{path, k})
		}
	}
	check("accept_cluster_keys", c.AcceptClusterKeys)
	if len(c.AcceptServerKeys) > 0 && (!c.Server || c.ServerKey == "") {
		bad("accept_server_keys", "is only for servers with server_key: it rotates server_key (docs/operations.md)")
		return errs
	}
	check("accept_server_keys", c.AcceptServerKeys)
	return errs
}

// sameKey reports whether two keys, as written, decode to the same bytes.
func sameKey(a, b string) bool {
	ka, errA := keytls.DecodeKey(a)
	kb, errB := keytls.DecodeKey(b)
	return errA == nil && errB == nil && subtle.ConstantTimeCompare(ka, kb) == 1
}
