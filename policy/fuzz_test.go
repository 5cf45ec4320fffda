package policy

import (
	"encoding/json"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, and
// whatever it accepts must validate, survive a YAML and a JSON round trip,
// and parse again to the same documents.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"kind: Split\nname: web\nsplits:\n- weight: 100\n",
		"kind: Resilience\nname: '*'\ntimeouts: {connect: 1s}\n",
		`[{"kind":"Intention","name":"web","sources":[{"name":"*","action":"deny"}]}]`,
		"kind: Split\nname: web\nsplits:\n- &a {weight: 100}\n- *a\n",
		"---\n---\nkind: IntentionDefaults\nname: default\naction: allow\n",
		"kind: Route\nname: web\nroutes:\n- match: {path_prefix: /, headers: [{name: a, exact: b}]}\n  split: s\n",
		"{kind: ServiceDefaults, name: x, protocol: 0x10}",
		"kind: ServiceIdentityDefaults\nname: default\nmode: deny\n",
		"kind: Route\nname: web\nroutes:\n- match: {path_exact: /login, methods: [POST, M-SEARCH]}\n  split: s\n",
		"kind: Intention\nname: api\nsources:\n- name: web\n  permissions:\n  - {action: allow, http: {path_prefix: /public, methods: [GET]}}\n  - {action: deny, http: {path_exact: /admin, headers: [{name: x-role, exact: ops}]}}\n- {name: '*', action: deny}\n",
		`{"kind":"Intention","name":"*","sources":[{"name":"*","permissions":[{"action":"deny","http":{"path_exact":"/"}}]}]}`,
		"kind: Fault\nname: api\nabort: {percent: 10, http_status: 503, grpc_status: 14}\ndelay: {percent: 0.5, fixed: 200ms}\nmatch:\n  headers:\n  - {name: x-chaos, exact: \"on\"}\n",
		`{"kind":"Fault","name":"*","abort":{"percent":1e-3,"grpc_status":8}}`,
		"kind: Fault\nname: api\ndelay: {percent: .nan, fixed: 1h}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Parse(data)
		if err != nil {
			return
		}
		for i := range docs {
			if err := docs[i].Validate(); err != nil {
				t.Fatalf("accepted document does not validate: %v", err)
			}
			b, err := json.Marshal(docs[i])
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			var back Document
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("JSON round trip: %v (%s)", err, b)
			}
		}
		// The decisions read every accepted intention without panicking.
		entries := make([]Entry, len(docs))
		for i := range docs {
			entries[i] = Entry{Document: docs[i]}
		}
		set := NewSet(1, entries)
		in := set.Intentions()
		req := Request{Method: "GET", Path: "/admin", Header: func(string) (string, bool) { return "ops", true }}
		for _, e := range entries {
			if e.Kind == KindIntention {
				for _, src := range e.Spec.(*Intention).Sources {
					in.Allowed(src.Name, e.Name)
					in.AllowedRequest(src.Name, e.Name, req)
				}
			}
		}
		// The data plane asks every accepted Fault whether it applies.
		for _, e := range entries {
			if e.Kind == KindFault {
				set.FaultFor(e.Name).Applies(req.Header)
				if a := e.Spec.(*Fault).Abort; a != nil {
					if h, g := a.Statuses(); h < 400 || h > 599 || g < 1 || g > 16 {
						t.Fatalf("accepted abort with statuses %d, %d", h, g)
					}
				}
			}
		}
		y, err := EncodeYAML(docs)
		if err != nil {
			t.Fatalf("EncodeYAML: %v", err)
		}
		again, err := Parse(y)
		if err != nil {
			t.Fatalf("re-parse of encoded YAML failed: %v\n%s", err, y)
		}
		if len(again) != len(docs) {
			t.Fatalf("re-parse gave %d documents, want %d", len(again), len(docs))
		}
	})
}
