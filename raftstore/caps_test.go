package raftstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshwork/meshwork/policy"
)

// smallDocs returns ServiceDefaults documents from..to-1.
func smallDocs(from, to int) []policy.Document {
	out := make([]policy.Document, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, policy.Document{Kind: policy.KindServiceDefaults, Name: fmt.Sprintf("svc-%05d", i),
			Spec: &policy.ServiceDefaults{Protocol: policy.ProtocolHTTP}})
	}
	return out
}

// bigDoc is an Intention of about 60 KiB of JSON.
func bigDoc(i int, desc string) policy.Document {
	spec := &policy.Intention{}
	for s := 0; s < 100; s++ {
		spec.Sources = append(spec.Sources, policy.IntentionSource{Name: fmt.Sprintf("caller-%03d", s), Action: policy.Allow,
			Description: strings.Repeat(desc, 500/len(desc))})
	}
	return policy.Document{Kind: policy.KindIntention, Name: fmt.Sprintf("big-%03d", i), Spec: spec}
}

func setTxn(docs []policy.Document) Txn {
	txn := make(Txn, len(docs))
	for i := range docs {
		txn[i] = Op{Type: OpPolicySet, Doc: &docs[i]}
	}
	return txn
}

func deleteTxn(kind policy.Kind, name string) Txn {
	return Txn{{Type: OpPolicyDelete, Key: &policy.Key{Kind: kind, Name: name}}}
}

// requireCap checks that r is a refusal by cap with the figures in its
// message.
func requireCap(t *testing.T, r TxnResult, cap string, current, after int64) {
	t.Helper()
	if r.Err == nil || !errors.Is(r.Err, policy.ErrCapExceeded) || r.Err.Code != "policy_cap" {
		t.Fatalf("result %+v, want a refusal by the %s cap", r, cap)
	}
	for _, want := range []string{cap + ":", fmt.Sprintf("holds %d", current), fmt.Sprintf("make it %d", after)} {
		if !strings.Contains(r.Err.Message, want) {
			t.Fatalf("refusal %q does not say %q", r.Err.Message, want)
		}
	}
}

// sumSizes is the documents' total encoded size, counted from scratch.
func sumSizes(s *fsmState) int64 {
	var n int64
	for _, e := range s.policySet().Entries() {
		n += policy.EncodedSize(&e.Document)
	}
	return n
}

func TestFSMDocumentCap(t *testing.T) {
	f := NewFSM()
	idx := uint64(0)
	for from := 0; from < policy.MaxTotalDocuments; from += policy.MaxDocuments {
		idx++
		if r := applyAt(t, f, idx, setTxn(smallDocs(from, from+policy.MaxDocuments))); r[0].Err != nil {
			t.Fatalf("documents %d..: %v", from, r[0].Err)
		}
	}
	full := f.state()
	if full.docs.Len() != policy.MaxTotalDocuments {
		t.Fatalf("%d documents, want %d", full.docs.Len(), policy.MaxTotalDocuments)
	}
	// One more is refused whole, with the figures; nothing changes.
	idx++
	r := applyAt(t, f, idx, setTxn(smallDocs(policy.MaxTotalDocuments, policy.MaxTotalDocuments+3)))
	requireCap(t, r[0], policy.CapDocuments, policy.MaxTotalDocuments, policy.MaxTotalDocuments+3)
	if f.state() != full {
		t.Fatal("a refused write changed the state")
	}
	// Rewriting existing documents does not grow the count.
	idx++
	rewrite := smallDocs(0, 10)
	for i := range rewrite {
		rewrite[i].Spec = &policy.ServiceDefaults{Protocol: policy.ProtocolGRPC}
	}
	if r := applyAt(t, f, idx, setTxn(rewrite)); r[0].Err != nil {
		t.Fatalf("rewrite at the cap: %v", r[0].Err)
	}
	// A delete and an add in one transaction keep the count.
	idx++
	swap := append(deleteTxn(policy.KindServiceDefaults, "svc-00000"), setTxn(smallDocs(policy.MaxTotalDocuments, policy.MaxTotalDocuments+1))...)
	if r := applyAt(t, f, idx, swap); r[0].Err != nil {
		t.Fatalf("delete and add at the cap: %v", r[0].Err)
	}
	if got, want := f.state().docBytes, sumSizes(f.state()); got != want {
		t.Fatalf("the state counts %d bytes, its documents hold %d", got, want)
	}
}

func TestFSMSizeCap(t *testing.T) {
	f := NewFSM()
	one := policy.EncodedSize(ptr(bigDoc(0, "x")))
	fit := int(policy.MaxTotalBytes / one)
	var docs []policy.Document
	for i := 0; i < fit; i++ {
		docs = append(docs, bigDoc(i, "x"))
	}
	if r := applyAt(t, f, 1, setTxn(docs)); r[0].Err != nil {
		t.Fatalf("%d documents of %d bytes: %v", fit, one, r[0].Err)
	}
	size := f.state().docBytes
	if size != sumSizes(f.state()) || size > policy.MaxTotalBytes || size+one <= policy.MaxTotalBytes {
		t.Fatalf("state of %d bytes, want the most that fits under %d", size, policy.MaxTotalBytes)
	}
	r := applyAt(t, f, 2, setTxn([]policy.Document{bigDoc(fit, "x")}))
	requireCap(t, r[0], policy.CapBytes, size, size+one)
	// Replacing a document with a smaller one is allowed; with a larger
	// one past the cap is not.
	small := smallDocs(0, 1)[0]
	small.Kind, small.Spec = policy.KindIntention, &policy.Intention{Sources: []policy.IntentionSource{{Name: "a", Action: policy.Allow}}}
	small.Name = "big-000"
	if r := applyAt(t, f, 3, setTxn([]policy.Document{small})); r[0].Err != nil {
		t.Fatalf("shrinking a document: %v", r[0].Err)
	}
	if got := f.state().docBytes; got != size-one+policy.EncodedSize(&small) || got != sumSizes(f.state()) {
		t.Fatalf("after shrinking: %d bytes, want %d", got, size-one+policy.EncodedSize(&small))
	}
}

func ptr[T any](v T) *T { return &v }

// TestFSMOverCapStateStaysUsable restores a state past both caps, as an
// older cluster may hold: it is read, rewritten and shrunk, never grown.
func TestFSMOverCapStateStaysUsable(t *testing.T) {
	over := policy.MaxTotalDocuments + 10
	entries := make([]policy.Entry, 0, over)
	for _, d := range smallDocs(0, over) {
		entries = append(entries, policy.Entry{Document: d, CreateIndex: 1, ModifyIndex: 1})
	}
	for i := 0; i < int(policy.MaxTotalBytes/policy.EncodedSize(ptr(bigDoc(0, "x"))))+2; i++ {
		entries = append(entries, policy.Entry{Document: bigDoc(i, "x"), CreateIndex: 1, ModifyIndex: 1})
	}
	b, err := json.Marshal(snapshotData{Version: 1, PolicyIndex: 1, Docs: entries})
	if err != nil {
		t.Fatal(err)
	}
	f := NewFSM()
	if err := f.Restore(nopCloser{strings.NewReader(string(b))}); err != nil {
		t.Fatalf("restore of a state over the caps: %v", err)
	}
	count, size := int64(f.state().docs.Len()), f.state().docBytes
	if count <= policy.MaxTotalDocuments || size <= policy.MaxTotalBytes || size != sumSizes(f.state()) {
		t.Fatalf("restored %d documents, %d bytes: want both over the caps, and the bytes counted", count, size)
	}
	if _, ok := f.Policy().Get(policy.KindServiceDefaults, "svc-00042"); !ok {
		t.Fatal("a document of the over-cap state is not readable")
	}
	if r := applyAt(t, f, 2, setTxn(smallDocs(over, over+1))); r[0].Err == nil {
		t.Fatal("a new document was added to a state over the caps")
	} else {
		requireCap(t, r[0], policy.CapDocuments, count, count+1)
	}
	if r := applyAt(t, f, 3, deleteTxn(policy.KindServiceDefaults, "svc-00001")); r[0].Err != nil {
		t.Fatalf("delete from a state over the caps: %v", r[0].Err)
	}
	rewrite := smallDocs(2, 3)
	rewrite[0].Spec = &policy.ServiceDefaults{Protocol: policy.ProtocolTCP}
	if r := applyAt(t, f, 4, setTxn(rewrite)); r[0].Err != nil {
		t.Fatalf("rewrite of a document that does not grow: %v", r[0].Err)
	}
	grown := bigDoc(0, "x")
	grown.Spec.(*policy.Intention).Sources = append(grown.Spec.(*policy.Intention).Sources, policy.IntentionSource{Name: "one-more", Action: policy.Deny})
	if r := applyAt(t, f, 5, setTxn([]policy.Document{grown})); r[0].Err == nil {
		t.Fatal("a document grew in a state over the size cap")
	} else if !strings.Contains(r[0].Err.Message, policy.CapBytes) {
		t.Fatalf("refusal %q does not name the size cap", r[0].Err.Message)
	}
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

// TestPolicyCapThroughAgents fills a real cluster to the document cap:
// a client agent's write past it is refused with the sentinel, its API
// answers 413 naming the cap, and deletes still work.
func TestPolicyCapThroughAgents(t *testing.T) {
	c := MakeTestCluster(t, 1)
	client := c.AddClient("client")
	leader := c.Leader()
	ctx := ctxT(t, 120*time.Second)
	for from := 0; from < policy.MaxTotalDocuments; from += policy.MaxDocuments {
		if _, err := leader.Node.ApplyDocuments(ctx, smallDocs(from, from+policy.MaxDocuments), nil); err != nil {
			t.Fatalf("documents %d..: %v", from, err)
		}
	}
	_, err := client.Node.ApplyDocuments(ctx, smallDocs(policy.MaxTotalDocuments, policy.MaxTotalDocuments+1), nil)
	if !errors.Is(err, policy.ErrCapExceeded) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("write past the cap through a client = %v, want ErrCapExceeded", err)
	}
	srv := apiServer(t, client.Node)
	status, body, _ := call(t, "PUT", srv.URL+"/v1/policy", "kind: ServiceDefaults\nname: one-too-many\nprotocol: http\n")
	var ae APIError
	if err := json.Unmarshal([]byte(body), &ae); err != nil || status != http.StatusRequestEntityTooLarge || ae.Code != "policy_cap" ||
		!strings.Contains(ae.Error, "documents: the policy holds 5000 and this write would make it 5001, over the cap of 5000") {
		t.Fatalf("API write past the cap: %d %s", status, body)
	}
	if _, err := client.Node.DeleteDocument(context.Background(), policy.Key{Kind: policy.KindServiceDefaults, Name: "svc-00007"}, nil); err != nil {
		t.Fatalf("delete at the cap: %v", err)
	}
	if _, err := ApplyDoc(ctx, client.Node, "kind: ServiceDefaults\nname: fits-again\n"); err != nil {
		t.Fatalf("write after a delete: %v", err)
	}
}

// BenchmarkFSMApplyPolicyWrite measures one write of one document to a
// policy of 4,000 documents, the work the caps add included (the encoded
// size of the new document and of the one it replaces).
func BenchmarkFSMApplyPolicyWrite(b *testing.B) {
	f := NewFSM()
	idx := uint64(0)
	for from := 0; from < 4000; from += policy.MaxDocuments {
		idx++
		data, _ := encodeEntry([]Txn{setTxn(smallDocs(from, from+policy.MaxDocuments))})
		f.ApplyBatch([]*raft.Log{{Index: idx, Type: raft.LogCommand, Data: data}})
	}
	doc := bigDoc(1, "x")
	doc.Spec.(*policy.Intention).Sources = doc.Spec.(*policy.Intention).Sources[:5]
	data, _ := encodeEntry([]Txn{setTxn([]policy.Document{doc})})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx++
		f.ApplyBatch([]*raft.Log{{Index: idx, Type: raft.LogCommand, Data: data}})
	}
}
