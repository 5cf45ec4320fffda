package raftstore

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/policy"
)

// FuzzReadBackup feeds readBackup backups whose header and state come from
// the fuzzer, with a size and checksum that match, so that the header
// checks and the state's decoding are reached: it must never panic, refuse
// with ErrBadSnapshot, and what it accepts must hold no key its header says
// was left out.
func FuzzReadBackup(f *testing.F) {
	doc := policy.Document{Kind: policy.KindServiceDefaults, Name: "web", Spec: &policy.ServiceDefaults{Protocol: policy.ProtocolHTTP}}
	state, _ := json.Marshal(snapshotData{Version: 1, PolicyIndex: 3, KVIndex: 4,
		Docs: []policy.Entry{{Document: doc, CreateIndex: 3, ModifyIndex: 3}},
		KV:   []KVEntry{{Key: "public/a", Value: []byte("v"), CreateIndex: 4, ModifyIndex: 4}}})
	f.Add(1, "included", "", state)
	f.Add(1, "", "", state)
	f.Add(2, "omitted", "secret/,sealed/", state)
	f.Add(2, "omitted", "public/", state)
	f.Add(2, "included", "", []byte(`{"version":1}`))
	f.Add(3, "omitted", "x", []byte(`{"version":1,"kv":[{"key":"","value":"AA=="}]}`))
	f.Add(1, "", "", []byte(`{"version":1,"docs":[{"kind":"Split","name":"x"}]}`))
	f.Fuzz(func(t *testing.T, version int, private, omitted string, data []byte) {
		h := backupHeader{Version: version, Private: private}
		if omitted != "" {
			h.OmittedKV = strings.Split(omitted, ",")
		}
		got, st, err := readBackup(writeBackup(h, data))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("refusal %v does not wrap ErrBadSnapshot", err)
			}
			return
		}
		if got.Version != 1 && got.Version != 2 {
			t.Fatalf("accepted version %d", got.Version)
		}
		for _, p := range got.OmittedKV {
			if e := st.kvList(p, nil); len(e) > 0 {
				t.Fatalf("accepted a backup that leaves out %q yet holds %q", p, e[0].Key)
			}
		}
		if _, err := st.marshal(); err != nil {
			t.Fatalf("an accepted state does not encode: %v", err)
		}
	})
}
