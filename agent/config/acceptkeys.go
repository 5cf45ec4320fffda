package config

import (
	"fmt"
	"sort"

	"github.com/meshwork/meshwork/internal/keytls"
)

// validateAcceptKeys maps the rules of internal/keytls for accepted keys
// (keytls.CheckAccepted: at most keytls.MaxAcceptKeys, none a key in use
// or listed twice) to accept_cluster_keys and accept_server_keys. The
// errors name entries by their path, never by their value: they are
// secrets.
func (c *Config) validateAcceptKeys() []error {
	var errs []error
	var held []keytls.Held
	for _, k := range []struct{ path, v string }{{"cluster_key", c.ClusterKey}, {"server_key", c.ServerKey}} {
		if key, err := keytls.DecodeKey(k.v); err == nil && k.v != "" {
			held = append(held, keytls.Held{Name: k.path, Key: key, InUse: true})
		}
	}
	check := func(field string, list []string) {
		type found struct {
			index int
			err   error
		}
		var problems []found
		keys := make([][]byte, len(list))
		for i, s := range list {
			key, err := keytls.DecodeKey(s)
			if err != nil {
				problems = append(problems, found{i, err})
				continue
			}
			keys[i] = key
		}
		for _, e := range keytls.CheckAccepted(field, keys, held...) {
			// An entry that does not decode is left empty; keytls's
			// "wrong size" would repeat what DecodeKey said of it.
			if e.Index >= 0 && keys[e.Index] == nil {
				continue
			}
			problems = append(problems, found{e.Index, e})
		}
		sort.SliceStable(problems, func(a, b int) bool { return problems[a].index < problems[b].index })
		for _, p := range problems {
			path := field
			if p.index >= 0 {
				path = fmt.Sprintf("%s[%d]", field, p.index)
			}
			errs = append(errs, &FieldError{Path: path, Msg: p.err.Error()})
		}
		for i, key := range keys {
			if key != nil {
				held = append(held, keytls.Held{Name: fmt.Sprintf("%s[%d]", field, i), Key: key})
			}
		}
	}
	check("accept_cluster_keys", c.AcceptClusterKeys)
	if len(c.AcceptServerKeys) > 0 && (!c.Server || c.ServerKey == "") {
		errs = append(errs, &FieldError{Path: "accept_server_keys", Msg: "is only for servers with server_key: it rotates server_key (docs/operations.md)"})
		return errs
	}
	check("accept_server_keys", c.AcceptServerKeys)
	return errs
}
