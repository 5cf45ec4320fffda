package acl

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// FuzzLoadState feeds arbitrary JSON to what reads a state dump (a Raft
// snapshot's ACL table, a client agent's persisted copy, a server's watch
// answer): it must never panic, and a state it loads must dump and load
// back to the same.
func FuzzLoadState(f *testing.F) {
	s := NewState()
	p := &Policy{ID: "11111111-1111-4111-8111-111111111111", Name: "web", Rules: Rules{Service: map[string]Access{"web": Write}}}
	if _, err := s.SetPolicy(p, 0, 3); err != nil {
		f.Fatal(err)
	}
	tok, _, err := NewToken(TokenSpec{Policies: []PolicyLink{{Name: "web"}}, TTL: time.Hour}, time.Unix(1700000000, 0))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.SetToken(tok, 0, 4); err != nil {
		f.Fatal(err)
	}
	boot, _, _ := NewToken(TokenSpec{Type: TypeManagement}, time.Unix(1700000000, 0))
	if _, err := s.Bootstrap(boot, 0, 5); err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(s.Dump())
	f.Add(good)
	for _, seed := range []string{
		`{}`,
		`{"index":1,"bootstrap_index":2}`,
		`{"index":3,"tokens":[{"accessor_id":"00000000-0000-0000-0000-000000000002","type":"client"}]}`,
		`{"index":3,"policies":[{"id":"11111111-1111-4111-8111-111111111111","name":"a","rules":{"service":{"x":"wirte"}}}]}`,
		`{"tokens":[null,{"accessor_id":"x"}],"policies":[null]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d Dump
		if json.Unmarshal(data, &d) != nil {
			return
		}
		st, err := LoadState(d)
		if err != nil {
			return
		}
		again, err := LoadState(st.Dump())
		if err != nil {
			t.Fatalf("a loaded state does not load back: %v", err)
		}
		if !reflect.DeepEqual(again.Dump(), st.Dump()) {
			t.Fatalf("a loaded state changed through a dump")
		}
	})
}
