package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/meshwork/meshwork/policy"
)

func inspectSeed(t testing.TB) []byte {
	t.Helper()
	doc := policy.Document{Kind: policy.KindServiceDefaults, Name: "web", Spec: &policy.ServiceDefaults{Protocol: policy.ProtocolHTTP}}
	state, err := json.Marshal(snapshotData{Version: 1, PolicyIndex: 3, KVIndex: 4,
		Docs: []policy.Entry{{Document: doc, CreateIndex: 3, ModifyIndex: 3}},
		KV: []KVEntry{
			{Key: "public/a", Value: []byte("v"), CreateIndex: 4, ModifyIndex: 4},
			{Key: "public/b", Value: []byte("v"), CreateIndex: 4, ModifyIndex: 4},
			{Key: "top", Value: []byte("v"), CreateIndex: 4, ModifyIndex: 4},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return writeBackup(backupHeader{Version: 1, Index: 9, Term: 2, Node: "s1", Private: backupPrivateIncluded}, state)
}

func TestInspectBackup(t *testing.T) {
	b := inspectSeed(t)
	info, err := InspectBackup(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if info.Index != 9 || info.Term != 2 || info.Node != "s1" || info.Version != 1 || info.Private != "included" {
		t.Errorf("header: %+v", info)
	}
	if info.FileSize != int64(len(b)) || info.Size == 0 || len(info.SHA256) != 64 {
		t.Errorf("sizes: file %d, state %d, sha %q", info.FileSize, info.Size, info.SHA256)
	}
	if info.PolicyIndex != 3 || info.Documents[policy.KindServiceDefaults] != 1 {
		t.Errorf("policy: index %d, documents %v", info.PolicyIndex, info.Documents)
	}
	if info.KVKeys["public/"] != 2 || info.KVKeys["top"] != 1 {
		t.Errorf("kv: %v", info.KVKeys)
	}

	for name, bad := range map[string][]byte{
		"empty":     nil,
		"not gzip":  []byte("hello"),
		"truncated": b[:len(b)/2],
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := InspectBackup(bytes.NewReader(bad)); !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("error %v, want ErrBadSnapshot", err)
			}
		})
	}
}

// FuzzInspectBackup feeds InspectBackup whole files, as `meshwork snapshot
// inspect` reads them: it must never panic, and must refuse with
// ErrBadSnapshot what it does not accept.
func FuzzInspectBackup(f *testing.F) {
	good := inspectSeed(f)
	f.Add(good)
	f.Add(good[:len(good)-4])
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte("meshwork-snapshot\n"))
	f.Add(writeBackup(backupHeader{Version: 2, Private: "omitted", OmittedKV: []string{"sealed/"}}, []byte(`{"version":1}`)))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := InspectBackup(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("refusal %v does not wrap ErrBadSnapshot", err)
			}
			return
		}
		if info.Format != BackupFormat || info.FileSize != int64(len(b)) {
			t.Fatalf("accepted %+v", info)
		}
	})
}
