//go:build e2e

package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/history"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/raftstore"
)

// The fault suite of the control plane: three servers and two clients, the
// real binary, one network namespace each. Two writers (one per client
// agent) and two readers of consistent reads run through every fault; the
// history of what they saw is checked for linearizability, so that no
// acknowledged write is lost and no read sees what it could not have. Each
// case also measures what the operator meets: how long writes were
// unavailable, whether every server starts again, how soon every agent's
// catalog and DNS are whole, and how long a stopped agent takes to exit.
// The figures are logged as "FIGURE ..." lines (docs/benchmarks.md).

// Limits the suite holds the mesh to.
const (
	maxWriteGap   = 3 * time.Second  // write unavailability after a kill, stall or cut
	maxWholeAfter = 10 * time.Second // catalog and DNS whole after the fault ends
	stopTimeout   = 30 * time.Second // the unit's TimeoutStopSec
)

// faultCluster is the cluster of the suite.
type faultCluster struct {
	t       *testing.T
	nw      *Net
	servers []*Agent
	clients []*Agent
	// workloads counts the workloads started, to name their registers.
	workloads int
}

func (c *faultCluster) all() []*Agent {
	return append(append([]*Agent(nil), c.servers...), c.clients...)
}

// startFaultCluster starts h1-h3 as servers and h4-h5 as clients, each
// client with an instance of web, the tunnel off (the data plane has suites
// of its own), every agent joining the servers.
func startFaultCluster(t *testing.T) *faultCluster {
	t.Helper()
	nw := New(t, 5)
	c := &faultCluster{t: t, nw: nw}
	enc, ck := Key(), Key()
	var join []string
	for _, h := range nw.Hosts[:3] {
		join = append(join, h.Addr)
	}
	for i, h := range nw.Hosts {
		opts := AgentOptions{Encrypt: enc, ClusterKey: ck, Join: join, Extra: "ports: {tunnel: -1}\n"}
		if i < 3 {
			opts.Server, opts.BootstrapExpect = true, 3
			c.servers = append(c.servers, h.StartAgent(opts))
			continue
		}
		opts.Extra += fmt.Sprintf("services:\n  - name: web\n    id: web-%s\n    port: 8080\n", h.Name)
		c.clients = append(c.clients, h.StartAgent(opts))
	}
	Eventually(t, 60*time.Second, "three voters and a leader", func() error {
		_, err := c.leader()
		return err
	})
	for _, a := range c.all() {
		Eventually(t, 60*time.Second, a.Host.Name+" whole", func() error { return c.whole(a) })
	}
	return c
}

// leader returns the server that the first client's view of Raft names as
// leader, once there are three voters.
func (c *faultCluster) leader() (*Agent, error) {
	var peers []raftstore.Peer
	var err error
	for _, a := range c.clients {
		if err = getJSON(a, "/v1/operator/raft/peers", &peers); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	voters := 0
	var leader *Agent
	for _, p := range peers {
		if p.Voter {
			voters++
		}
		for _, s := range c.servers {
			if p.Leader && p.ID == s.Host.Name {
				leader = s
			}
		}
	}
	if voters != 3 || leader == nil {
		return nil, fmt.Errorf("peers %+v", peers)
	}
	return leader, nil
}

// whole reports why agent a's view is not whole yet: every member alive,
// both web instances passing in its catalog, and its DNS answering
// web.service.mesh with both instances.
func (c *faultCluster) whole(a *Agent) error {
	var ms []api.Member
	if err := getJSON(a, "/v1/agent/members", &ms); err != nil {
		return err
	}
	alive := map[string]bool{}
	for _, m := range ms {
		alive[m.Name] = m.Status == api.MemberAlive
	}
	for _, h := range c.nw.Hosts {
		if !alive[h.Name] {
			return fmt.Errorf("%s does not see %s alive", a.Host.Name, h.Name)
		}
	}
	var es []api.HealthServiceEntry
	if err := getJSON(a, "/v1/health/service/web?passing", &es); err != nil {
		return err
	}
	if len(es) != len(c.clients) {
		return fmt.Errorf("%s: %d passing web instances, want %d", a.Host.Name, len(es), len(c.clients))
	}
	ips, err := lookupA(a.Host, "web.service.mesh.")
	if err != nil {
		return fmt.Errorf("%s: DNS: %w", a.Host.Name, err)
	}
	if len(ips) != len(c.clients) {
		return fmt.Errorf("%s: DNS answers %v for web.service.mesh, want %d addresses", a.Host.Name, ips, len(c.clients))
	}
	return nil
}

// waitWhole waits until every agent's view is whole and returns how long
// that took from since.
func (c *faultCluster) waitWhole(since time.Time, limit time.Duration) time.Duration {
	c.t.Helper()
	for _, a := range c.all() {
		Eventually(c.t, limit+20*time.Second, a.Host.Name+" whole again", func() error { return c.whole(a) })
	}
	took := time.Since(since)
	if took > limit {
		c.t.Errorf("catalog and DNS whole %s after the fault ended, want at most %s", took.Round(time.Millisecond), limit)
	}
	return took
}

// stopAll sends SIGTERM to every agent of as at once and returns how long
// the slowest took to exit; it fails the test if one outlasts stopTimeout.
func (c *faultCluster) stopAll(as []*Agent) time.Duration {
	c.t.Helper()
	start := time.Now()
	for _, a := range as {
		a.Proc.Signal(syscall.SIGTERM)
	}
	var slowest time.Duration
	for _, a := range as {
		if _, ok := a.Proc.Wait(stopTimeout - time.Since(start)); !ok {
			c.t.Errorf("%s did not exit within %s of SIGTERM", a.Host.Name, stopTimeout)
			a.Proc.Signal(syscall.SIGKILL)
			<-a.Proc.Done()
		}
		slowest = max(slowest, time.Since(start))
	}
	return slowest
}

// restartAll starts every agent of as again, from its data dir.
func restartAll(as []*Agent) {
	for _, a := range as {
		a.Restart()
	}
}

// serversBack waits until every server runs again and Raft has three
// voters and a leader.
func (c *faultCluster) serversBack() {
	c.t.Helper()
	for _, s := range c.servers {
		Eventually(c.t, 60*time.Second, s.Host.Name+" serves again", func() error {
			select {
			case <-s.Proc.Done():
				return fmt.Errorf("%s exited: %v", s.Host.Name, s.Proc.err)
			default:
			}
			var st raftstore.PolicyStatus
			return getJSON(s, "/v1/policy/status", &st)
		})
	}
	Eventually(c.t, 60*time.Second, "three voters and a leader", func() error { _, err := c.leader(); return err })
}

// figure logs one measured figure of the suite.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE "+format, args...)
}

// ---- the workload ----

// workload writes and reads registers (Intention documents w<n>-k0..k7,
// whose one source's description holds the value) through the client agents
// and records every operation.
type workload struct {
	c    *faultCluster
	hist *history.Recorder
	stop chan struct{}
	wg   sync.WaitGroup

	// keys are this workload's own registers: a history starts from empty
	// registers, so each workload writes names no earlier one wrote.
	keys []string

	mu   sync.Mutex
	acks []time.Time // when each acknowledged write returned
}

const (
	registerKeys = 8
	// opTimeout bounds one call as a client would: past it a write's
	// outcome is unknown.
	opTimeout = 20 * time.Second
	// pace spaces one client's operations: about 40 writes and 40
	// consistent reads a second in all.
	pace = 50 * time.Millisecond
)

// startWorkload starts one writer and one reader on each client agent,
// bounded in count as well as by stopWorkload.
func (c *faultCluster) startWorkload() *workload {
	c.workloads++
	w := &workload{c: c, hist: history.NewRecorder(), stop: make(chan struct{})}
	for k := range registerKeys {
		w.keys = append(w.keys, fmt.Sprintf("w%d-k%d", c.workloads, k))
	}
	for i, a := range c.clients {
		w.wg.Add(2)
		go w.writer(i, a)
		go w.reader(len(c.clients)+i, a)
	}
	return w
}

// maxOps caps one loop, whatever happens to stop: 20 minutes at the pace.
const maxOps = int(20 * time.Minute / pace)

func (w *workload) writer(client int, a *Agent) {
	defer w.wg.Done()
	for seq := 0; seq < maxOps; seq++ {
		select {
		case <-w.stop:
			return
		default:
		}
		key := w.keys[rand.IntN(len(w.keys))]
		val := fmt.Sprintf("c%d-%d", client, seq)
		op := w.hist.Write(client, key, val)
		out := putRegister(a, key, val)
		op.Done(out)
		if out == history.OK {
			w.mu.Lock()
			w.acks = append(w.acks, time.Now())
			w.mu.Unlock()
		}
		time.Sleep(pace) // pacing of the load loop
	}
}

func (w *workload) reader(client int, a *Agent) {
	defer w.wg.Done()
	for seq := 0; seq < maxOps; seq++ {
		select {
		case <-w.stop:
			return
		default:
		}
		key := w.keys[rand.IntN(len(w.keys))]
		op := w.hist.Read(client, key)
		if found, val, err := getRegister(a, key, true); err != nil {
			op.Fail()
		} else {
			op.Answer(found, val)
		}
		time.Sleep(pace) // pacing of the load loop
	}
}

// ackCount is the number of acknowledged writes so far.
func (w *workload) ackCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// waitAcks waits until n more writes have been acknowledged.
func (w *workload) waitAcks(n int, what string) {
	w.c.t.Helper()
	base := w.ackCount()
	Eventually(w.c.t, 60*time.Second, what, func() error {
		if got := w.ackCount() - base; got < n {
			return fmt.Errorf("%d writes acknowledged, want %d", got, n)
		}
		return nil
	})
}

// acksBetween counts the writes acknowledged between from and to.
func (w *workload) acksBetween(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, t := range w.acks {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

// gap returns the longest time without an acknowledged write around a
// fault that began at from and ended at to: from the last acknowledgement
// before from to the first one after it, and between any two
// acknowledgements until to. It is the write unavailability a caller saw.
func (w *workload) gap(from, to time.Time) time.Duration {
	w.mu.Lock()
	acks := append([]time.Time(nil), w.acks...)
	w.mu.Unlock()
	sort.Slice(acks, func(i, j int) bool { return acks[i].Before(acks[j]) })
	var longest time.Duration
	prev := time.Time{}
	for _, t := range acks {
		if t.Before(from) {
			prev = t
			continue
		}
		if !prev.IsZero() {
			longest = max(longest, t.Sub(prev))
		}
		prev = t
		if t.After(to) {
			break
		}
	}
	if prev.Before(to) {
		longest = max(longest, time.Since(prev)) // none since: still unavailable
	}
	return longest
}

// finish stops the workload, reads every register consistently once more,
// checks the history for linearizability, and checks that every agent's
// own copy of the policy holds what the final reads saw.
func (w *workload) finish() {
	t := w.c.t
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	reader := w.c.clients[0]
	final := map[string]string{}
	for _, key := range w.keys {
		var found bool
		var val string
		Eventually(t, 30*time.Second, "final read of "+key, func() error {
			op := w.hist.Read(2*len(w.c.clients), key)
			var err error
			if found, val, err = getRegister(reader, key, true); err != nil {
				op.Fail()
				return err
			}
			op.Answer(found, val)
			return nil
		})
		if found {
			final[key] = val
		}
	}
	st := w.hist.Stats()
	figure(t, "history: %d writes acknowledged, %d failed, %d unknown, %d consistent reads", st.WritesOK, st.WritesFailed, st.WritesUnknown, st.Reads)
	if st.WritesOK == 0 {
		t.Fatal("no write was acknowledged")
	}
	if err := w.hist.Check(2*time.Minute, filepath.Join(t.TempDir(), "history.html")); err != nil {
		t.Fatalf("the history of %d operations: %v", st.WritesOK+st.WritesFailed+st.WritesUnknown+st.Reads, err)
	}
	for _, a := range w.c.all() {
		Eventually(t, 30*time.Second, a.Host.Name+" holds every register", func() error {
			for key, want := range final {
				found, got, err := getRegister(a, key, false)
				if err != nil {
					return err
				}
				if !found || got != want {
					return fmt.Errorf("%s: %s = %q (found %v), want %q", a.Host.Name, key, got, found, want)
				}
			}
			return nil
		})
	}
}

// ---- calls into a host's agent ----

// agentHTTP returns a client for the agent API of a's host, dialled from
// inside that host's namespace.
func agentHTTP(a *Agent) *http.Client {
	return &http.Client{Timeout: opTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return a.Host.DialContext(ctx, network, "127.0.0.1:8500")
		},
		DisableKeepAlives: true, // an agent restarts under the suite
	}}
}

func getJSON(a *Agent, path string, out any) error {
	resp, err := agentHTTP(a).Get("http://127.0.0.1:8500" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// putRegister writes value to register key through agent a and says how
// the write ended. A refused connection never carried the write; an answer
// that names an unknown outcome, a timeout or a cut connection may have.
func putRegister(a *Agent, key, value string) history.Outcome {
	doc := policy.Document{Kind: policy.KindIntention, Name: key, Spec: &policy.Intention{
		Sources: []policy.IntentionSource{{Name: "fault-suite", Action: policy.Deny, Description: value}},
	}}
	body, _ := json.Marshal([]policy.Document{doc})
	req, _ := http.NewRequest(http.MethodPut, "http://127.0.0.1:8500/v1/policy", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", a.Host.Name+"/"+key+"/"+value)
	resp, err := agentHTTP(a).Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return history.Failed
		}
		return history.Unknown
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusOK:
		return history.OK
	case resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "outcome_unknown"):
		return history.Unknown
	case resp.StatusCode >= 500 && !strings.Contains(string(b), `"code"`):
		// An error the agent did not classify: count it as unknown, the
		// answer a caller must assume.
		return history.Unknown
	}
	return history.Failed
}

// getRegister reads register key through agent a: consistently (through
// the leader) or from the agent's own copy.
func getRegister(a *Agent, key string, consistent bool) (found bool, value string, err error) {
	path := "/v1/policy/Intention/" + key
	if consistent {
		path += "?consistent"
	}
	resp, err := agentHTTP(a).Get("http://127.0.0.1:8500" + path)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusNotFound:
		return false, "", nil
	case http.StatusOK:
	default:
		return false, "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	var e struct {
		Sources []policy.IntentionSource `json:"sources"`
	}
	if err := json.Unmarshal(b, &e); err != nil || len(e.Sources) != 1 {
		return false, "", fmt.Errorf("GET %s: unexpected answer %s", path, b)
	}
	return true, e.Sources[0].Description, nil
}

// lookupA asks the agent's DNS on h for name's A records, over UDP.
func lookupA(h *Host, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := h.DialContext(ctx, "udp", "127.0.0.1:8600")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	co := &dns.Conn{Conn: conn}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	r, err := co.ReadMsg()
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return ips, nil
}

// ---- the cases ----

// TestControlPlaneFaults runs the six faults one after the other on one
// cluster, each under the workload and each checked on its own.
func TestControlPlaneFaults(t *testing.T) {
	c := startFaultCluster(t)
	cases := []struct {
		name string
		run  func(t *testing.T, c *faultCluster)
	}{
		{"leader killed every 10s", killLeaderRepeatedly},
		{"leader stalled for 5s", stallLeader},
		{"leader cut off for 20s", cutLeader},
		{"every server restarted at once", restartServers},
		{"client restarted during a server outage", restartClientDuringOutage},
		{"every server stopped at once", stopServers},
	}
	for _, tc := range cases {
		ok := t.Run(tc.name, func(t *testing.T) {
			c.t = t
			tc.run(t, c)
		})
		c.t = t
		if !ok {
			break // the cluster may be in no state for the next case
		}
	}
}

// killLeaderRepeatedly kills the leader with SIGKILL every 10 s for two
// minutes under the workload, restarting each killed server at once.
func killLeaderRepeatedly(t *testing.T, c *faultCluster) {
	w := c.startWorkload()
	w.waitAcks(20, "writes before the first kill")
	end := time.Now().Add(2 * time.Minute)
	var gaps []time.Duration
	for time.Now().Before(end) {
		leader, err := c.leader()
		if err != nil {
			Eventually(t, 30*time.Second, "a leader", func() error { leader, err = c.leader(); return err })
		}
		killed := time.Now()
		leader.Proc.Signal(syscall.SIGKILL)
		<-leader.Proc.Done()
		leader.Restart()
		w.waitAcks(10, "writes after a kill")
		next := killed.Add(10 * time.Second)
		time.Sleep(time.Until(next)) // the fault's schedule: one kill every 10 s
		g := w.gap(killed, killed)
		gaps = append(gaps, g)
		if g > maxWriteGap {
			t.Errorf("writes unavailable for %s after killing %s at %s, want at most %s", g.Round(time.Millisecond), leader.Host.Name, killed.Format("15:04:05.000"), maxWriteGap)
		}
	}
	w.finish()
	figure(t, "kill -9 of the leader every 10s for 2m: %d kills, write unavailability %s", len(gaps), spread(gaps))
	c.waitWhole(time.Now(), maxWholeAfter)
}

// stallLeader stops the leader with SIGSTOP for 5 s.
func stallLeader(t *testing.T, c *faultCluster) {
	leaderFault(t, c, "SIGSTOP of the leader", 5*time.Second,
		func(l *Agent) { l.Proc.Signal(syscall.SIGSTOP) },
		func(l *Agent) { l.Proc.Signal(syscall.SIGCONT) })
}

// cutLeader takes the leader's link down for 20 s.
func cutLeader(t *testing.T, c *faultCluster) {
	leaderFault(t, c, "the leader's link down", 20*time.Second,
		func(l *Agent) { l.Host.Cut() },
		func(l *Agent) { l.Host.Mend() })
}

// leaderFault puts the leader under a fault for d, whatever happens
// meanwhile, under the workload: writes must go on through another leader
// during the fault, with at most maxWriteGap without one, and every
// agent's view must be whole again within maxWholeAfter of its end.
func leaderFault(t *testing.T, c *faultCluster, what string, d time.Duration, inject, heal func(*Agent)) {
	w := c.startWorkload()
	w.waitAcks(20, "writes before the fault")
	leader, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	inject(leader)
	<-time.After(d) // the fault lasts d
	heal(leader)
	ended := time.Now()
	during := w.acksBetween(began, ended)
	w.waitAcks(20, "writes after the fault")
	g := w.gap(began, ended)
	w.finish()
	figure(t, "%s for %s: write unavailability %s, %d writes acknowledged during the fault", what, d, g.Round(time.Millisecond), during)
	if during == 0 {
		t.Errorf("no write was acknowledged during the fault")
	}
	if g > maxWriteGap {
		t.Errorf("writes unavailable for %s during the fault, want at most %s", g.Round(time.Millisecond), maxWriteGap)
	}
	figure(t, "%s: catalog and DNS whole %s after the fault ended", what, c.waitWhole(ended, maxWholeAfter).Round(time.Millisecond))
}

// restartServers stops every server with SIGTERM at once and starts them
// all again: writes stop during the outage and resume after it, and one
// cluster forms again.
func restartServers(t *testing.T, c *faultCluster) {
	w := c.startWorkload()
	w.waitAcks(20, "writes before the restart")
	took := c.stopAll(c.servers)
	figure(t, "all servers restarted: the slowest exited %s after SIGTERM", took.Round(time.Millisecond))
	restartAll(c.servers)
	started := time.Now()
	c.serversBack()
	w.waitAcks(20, "writes after the restart")
	w.finish()
	figure(t, "all servers restarted: catalog and DNS whole %s after the start", c.waitWhole(started, maxWholeAfter).Round(time.Millisecond))
}

// restartClientDuringOutage stops every server, restarts a client while
// they are down, and checks that it rejoins the other client at once: its
// catalog and DNS work without any server. Then the servers come back.
func restartClientDuringOutage(t *testing.T, c *faultCluster) {
	c.stopAll(c.servers)
	client, other := c.clients[1], c.clients[0]
	took := c.stopAll([]*Agent{client})
	figure(t, "client stopped during the outage: exited %s after SIGTERM", took.Round(time.Millisecond))
	client.Restart()
	restarted := time.Now()
	Eventually(t, maxWholeAfter+20*time.Second, "the restarted client rejoins the other", func() error {
		st, err := client.StatusOf(other.Host.Name)
		if err != nil {
			return err
		}
		if st != api.MemberAlive {
			return fmt.Errorf("%s is %s", other.Host.Name, st)
		}
		ips, err := lookupA(client.Host, "web.service.mesh.")
		if err != nil {
			return err
		}
		if len(ips) != len(c.clients) {
			return fmt.Errorf("DNS answers %v", ips)
		}
		return nil
	})
	rejoined := time.Since(restarted)
	figure(t, "client restarted during a full server outage: catalog and DNS whole %s after its start", rejoined.Round(time.Millisecond))
	if rejoined > maxWholeAfter {
		t.Errorf("the restarted client took %s to rejoin, want at most %s", rejoined.Round(time.Millisecond), maxWholeAfter)
	}
	restartAll(c.servers)
	back := time.Now()
	c.serversBack()
	figure(t, "after the outage: catalog and DNS whole %s after the servers started", c.waitWhole(back, maxWholeAfter).Round(time.Millisecond))
	w := c.startWorkload()
	w.waitAcks(20, "writes after the outage")
	w.finish()
}

// stopServers gives every server SIGTERM at once while writes go on: each
// exits within its stop timeout, and each starts again.
func stopServers(t *testing.T, c *faultCluster) {
	w := c.startWorkload()
	w.waitAcks(20, "writes before the stop")
	took := c.stopAll(c.servers)
	figure(t, "all servers given SIGTERM at once: the slowest exited %s after it", took.Round(time.Millisecond))
	restartAll(c.servers)
	started := time.Now()
	c.serversBack()
	w.waitAcks(20, "writes after the servers started again")
	w.finish()
	c.waitWhole(started, maxWholeAfter)
}

// spread formats durations as "min–max (n)".
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	lo, hi := ds[0], ds[0]
	for _, d := range ds {
		lo, hi = min(lo, d), max(hi, d)
	}
	return fmt.Sprintf("%s–%s over %d", lo.Round(time.Millisecond), hi.Round(time.Millisecond), len(ds))
}
