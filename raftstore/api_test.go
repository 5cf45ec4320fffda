package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/policy"
)

func apiServer(t *testing.T, n *Node) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	if err := n.RegisterAPI(acl.MountAllowAll(mux)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, method, url, body string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestHTTPAPI(t *testing.T) {
	c := MakeTestCluster(t, 3)
	cl := c.AddClient("c1")
	srv := apiServer(t, cl.Node)

	tests := []struct {
		name, method, path, body string
		status                   int
		contains                 string
	}{
		{"apply", "PUT", "/v1/policy", "kind: ServiceDefaults\nname: web\nprotocol: http\n---\nkind: Split\nname: web\nsplits: [{weight: 100}]\n", 200, `"documents"`},
		{"invalid names the field", "PUT", "/v1/policy", "kind: Split\nname: web\nsplits:\n- weight: 100\n- weight: -5\n", 400,
			`Split \"web\": splits[1].weight: -5 must be between 0 and 100`},
		{"unknown key", "PUT", "/v1/policy", "kind: ServiceDefaults\nname: web\nprotocoll: http\n", 400, `protocoll: unknown key`},
		{"dangling route", "PUT", "/v1/policy", "kind: Route\nname: web\nroutes: [{match: {}, split: nope}]\n", 400, `Split \"nope\" does not exist`},
		{"cas=0 on existing", "PUT", "/v1/policy?cas=0", "kind: ServiceDefaults\nname: web\n", 409, "already exists"},
		{"bad cas", "PUT", "/v1/policy?cas=x", "kind: ServiceDefaults\nname: web\n", 400, "cas"},
		{"get consistent", "GET", "/v1/policy/servicedefaults/web?consistent", "", 200, `"protocol": "http"`},
		{"get missing", "GET", "/v1/policy/Split/nope?consistent", "", 404, "not found"},
		{"get bad kind", "GET", "/v1/policy/Gateway/x", "", 400, `kind \"Gateway\" is unknown`},
		{"list kind", "GET", "/v1/policy?kind=split&consistent", "", 200, `"splits"`},
		{"delete split used by nothing", "DELETE", "/v1/policy/Split/web", "", 200, `"index"`},
		{"delete again", "DELETE", "/v1/policy/Split/web", "", 404, "not found"},
		{"status", "GET", "/v1/policy/status", "", 200, `"staleness_seconds"`},
		{"peers", "GET", "/v1/operator/raft/peers", "", 200, `"voter": true`},
		{"remove unknown peer", "DELETE", "/v1/operator/raft/peers/nobody", "", 404, "nobody"},
		{"restore garbage", "PUT", "/v1/snapshot", "garbage", 400, "bad snapshot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := call(t, tc.method, srv.URL+tc.path, tc.body)
			if status != tc.status || !strings.Contains(body, tc.contains) {
				t.Fatalf("%s %s = %d %s; want %d containing %q", tc.method, tc.path, status, body, tc.status, tc.contains)
			}
		})
	}

	// Blocking query from the last write's index: wakes on the next change.
	_, body, _ := call(t, "PUT", srv.URL+"/v1/policy", "kind: ServiceDefaults\nname: api\n")
	var ar ApplyResponse
	if err := json.Unmarshal([]byte(body), &ar); err != nil || ar.Index == 0 {
		t.Fatalf("apply: %s %v", body, err)
	}
	done := make(chan string, 1)
	go func() {
		_, b, _ := call(t, "GET", srv.URL+"/v1/policy?kind=Intention&wait=20s&index="+strconv.FormatUint(ar.Index, 10), "")
		done <- b
	}()
	if status, b, _ := call(t, "PUT", srv.URL+"/v1/policy", "kind: Intention\nname: web\nsources: [{name: api, action: allow}]\n"); status != 200 {
		t.Fatalf("apply intention: %d %s", status, b)
	}
	select {
	case b := <-done:
		if !strings.Contains(b, `"sources"`) {
			t.Fatalf("blocking list returned %s", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking query did not wake")
	}

	// Snapshot save and restore through the API.
	status, snap, _ := call(t, "GET", srv.URL+"/v1/snapshot", "")
	if status != 200 || len(snap) < 20 {
		t.Fatalf("snapshot save: %d, %d bytes", status, len(snap))
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/v1/snapshot", bytes.NewReader([]byte(snap)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("snapshot restore: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := MakeTestCluster(t, 1, TestOptions{})
	_ = c
	// A separate node registered in reg, to see every name.
	n, err := New(Config{NodeName: "m", DataDir: t.TempDir(), ClusterKey: c.Key}, Deps{Discovery: c.Disc, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	n.m.applies.WithLabelValues("ok").Inc()
	n.m.fsmDocs.WithLabelValues("Split").Set(1)
	n.m.peers.WithLabelValues("voter").Set(1)
	n.m.policyDocs.WithLabelValues("Split").Set(1)
	n.m.rpcRequests.WithLabelValues("x", "ok").Inc()
	n.m.autopilotChanges.WithLabelValues("add").Inc()
	n.m.setPolicy(policy.Empty())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{MetricApplies, MetricApplyDuration, MetricApplyBatch, MetricLeaderChanges, MetricIsLeader,
		MetricLastContact, MetricFSMDocuments, MetricPeers, MetricPolicyIndex, MetricPolicyStaleness, MetricPolicyDocuments,
		MetricPolicyUpdates, MetricRPCRequests, MetricAutopilotChanges} {
		if !got[name] {
			t.Errorf("metric %s is not registered", name)
		}
		if !strings.HasPrefix(name, "meshwork_raft_") && !strings.HasPrefix(name, "meshwork_policy_") {
			t.Errorf("metric %s does not follow meshwork_<subsystem>_<name>_<unit>", name)
		}
	}
	if len(got) != 14 {
		t.Errorf("%d metrics registered, want 14: %v", len(got), got)
	}
}

func TestConfigValidate(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	base := Config{NodeName: "n", DataDir: "/tmp/x", ClusterKey: key}
	tests := []struct {
		name string
		mut  func(*Config)
		want string
	}{
		{"no node", func(c *Config) { c.NodeName = "" }, "NodeName"},
		{"no dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"short key", func(c *Config) { c.ClusterKey = key[:5] }, "ClusterKey"},
		{"expect 2", func(c *Config) { c.Server = true; c.BootstrapExpect = 2; c.AdvertiseAddr = "10.0.0.1:7947" }, "BootstrapExpect 2"},
		{"client expect", func(c *Config) { c.BootstrapExpect = 3 }, "only servers"},
		{"no advertise", func(c *Config) { c.Server = true }, "AdvertiseAddr"},
		{"lease", func(c *Config) {
			c.Timing = Timing{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: 2 * time.Second, CommitTimeout: time.Millisecond}
		}, "LeaderLeaseTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mut(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want it to name %s", err, tc.want)
			}
		})
	}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMountRPCAndExchange(t *testing.T) {
	c := MakeTestCluster(t, 3)
	for _, s := range c.Servers() {
		s.Node.MountRPC("POST /rpc/v1/test/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st, ok := PeerTLS(r)
			if !ok || len(st.PeerCertificates) == 0 {
				http.Error(w, `{"error":"no peer","code":"forbidden"}`, http.StatusForbidden)
				return
			}
			b, _ := io.ReadAll(r.Body)
			w.Write([]byte(st.PeerCertificates[0].Subject.CommonName + ":" + string(b)))
		}))
	}
	cl := c.AddClient("caller")
	ctx := ctxT(t, 20*time.Second)
	status, body, err := cl.Node.RPC().Exchange(ctx, "POST", "/rpc/v1/test/echo", []byte("hi"), CallOptions{})
	if err != nil || status != 200 || string(body) != "caller:hi" {
		t.Fatalf("Exchange = %d %q %v", status, body, err)
	}
	status, body, err = cl.Node.RPC().Exchange(ctx, "GET", "/rpc/v1/kv/nope", nil, CallOptions{})
	if err != nil || status != 404 || !strings.Contains(string(body), `"code":"not_found"`) {
		t.Fatalf("Exchange of an error answer = %d %q %v", status, body, err)
	}
}

// putPolicy sends body to PUT /v1/policy with an Idempotency-Key (when not
// empty) and decodes the answer.
func putPolicy(t *testing.T, url, key, body string) (int, ApplyResponse, APIError, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("PUT", url+"/v1/policy", strings.NewReader(body))
	if key != "" {
		req.Header.Set(HeaderIdempotencyKey, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ok ApplyResponse
	var e APIError
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &ok); err != nil {
			t.Fatalf("answer %s: %v", b, err)
		}
	} else if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error answer %s: %v", b, err)
	}
	return resp.StatusCode, ok, e, resp.Header
}

// TestHTTPAPIIdempotency checks the Idempotency-Key header of the policy
// writes and the answer to a write whose outcome is unknown.
func TestHTTPAPIIdempotency(t *testing.T) {
	c := MakeTestCluster(t, 3)
	cl := c.AddClient("c1")
	// A short RPC deadline, so that the unknown outcome below comes soon.
	c.StopClient(cl)
	cl.Config.RPCTimeout = 3 * time.Second
	c.StartClient(cl)
	srv := apiServer(t, cl.Node)
	web := "kind: ServiceDefaults\nname: web\nprotocol: http\n"

	status, first, _, h := putPolicy(t, srv.URL, "deploy-42", web)
	if status != 200 || h.Get(HeaderIdempotencyKey) != "deploy-42" {
		t.Fatalf("first write: %d, key header %q", status, h.Get(HeaderIdempotencyKey))
	}
	status, again, _, _ := putPolicy(t, srv.URL, "deploy-42", web)
	if status != 200 || again.Index != first.Index {
		t.Fatalf("same write, same key: %d at %d, want 200 at the first index %d", status, again.Index, first.Index)
	}
	status, _, e, _ := putPolicy(t, srv.URL, "deploy-42", "kind: ServiceDefaults\nname: api\n")
	if status != 400 || e.Code != "invalid" || !strings.Contains(e.Error, "different write") {
		t.Fatalf("same key, other write: %d %+v", status, e)
	}
	status, _, e, _ = putPolicy(t, srv.URL, "has space", web)
	if status != 400 || e.Code != "invalid" || !strings.Contains(e.Error, HeaderIdempotencyKey) {
		t.Fatalf("bad key: %d %+v", status, e)
	}
	status, _, _, h = putPolicy(t, srv.URL, "", web)
	if status != 200 || h.Get(HeaderIdempotencyKey) == "" {
		t.Fatalf("write without a key: %d, key header %q", status, h.Get(HeaderIdempotencyKey))
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/v1/policy?cas=0", strings.NewReader(web))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 409 || e.Code != "cas_conflict" || e.IdempotencyKey == "" {
		t.Fatalf("conflict: %d %+v", resp.StatusCode, e)
	}

	// The agent hears no answer from the servers: the write is applied,
	// and the API says the outcome is unknown, never that it failed.
	c.Deafen(cl.Name, true)
	split := "kind: Split\nname: web\nsplits: [{weight: 100}]\n"
	status, _, e, h = putPolicy(t, srv.URL, "deploy-43", split)
	c.Deafen(cl.Name, false)
	if status != http.StatusServiceUnavailable || e.Code != "outcome_unknown" || e.IdempotencyKey != "deploy-43" || h.Get("Retry-After") == "" {
		t.Fatalf("write with its answer lost: %d %+v, Retry-After %q", status, e, h.Get("Retry-After"))
	}
	leader := c.Leader()
	var applied uint64
	testnet.Eventually(t, 10*time.Second, "the write on the leader", testnet.Holds(func() bool {
		en, ok := leader.Node.fsm.Policy().Get(policy.KindSplit, "web")
		if ok {
			applied = en.ModifyIndex
		}
		return ok
	}))
	status, retried, _, _ := putPolicy(t, srv.URL, "deploy-43", split)
	if status != 200 || retried.Index != applied {
		t.Fatalf("retry with the same key: %d at %d, want 200 at %d", status, retried.Index, applied)
	}
}

func TestAPIErrorCodes(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{ErrOutcomeUnknown, 503, "outcome_unknown"},
		{fmt.Errorf("raftstore: apply: %w", ErrLeadershipLost), 503, "outcome_unknown"},
		{&RemoteError{Code: "lost_leader", Message: "x"}, 503, "outcome_unknown"},
		{ErrNoLeader, 503, "no_leader"},
		{ErrCASConflict, 409, "cas_conflict"},
		{policy.ErrInvalid, 400, "invalid"},
		{ErrNotFound, 404, "not_found"},
		{errors.New("boom"), 500, "internal"},
	}
	for _, tc := range tests {
		t.Run(tc.code+" "+tc.err.Error(), func(t *testing.T) {
			w := httptest.NewRecorder()
			writeAPIError(w, tc.err)
			var e APIError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			if w.Code != tc.status || e.Code != tc.code || e.Error == "" {
				t.Fatalf("answer %d %+v, want %d %s", w.Code, e, tc.status, tc.code)
			}
		})
	}
}
