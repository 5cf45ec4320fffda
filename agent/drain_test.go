package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
	"github.com/meshwork/meshwork/transport"
)

// TestStoppingAgentDrains stops a client agent as SIGTERM does, Leave then
// Drain, while a server agent's request to a service on it is in flight: the
// request completes, a new one is not sent to the leaving node, and Drain
// returns once the request is done.
func TestStoppingAgentDrains(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	l := listenTCP(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		fmt.Fprint(w, "slow done")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port

	s, c, _ := serverAndClient(t, "127.253.0.0/16", "127.254.0.0/16", []api.ServiceDefinition{{Name: "slow", Port: port}})
	applyPolicy(t, s.Raft(), "kind: IntentionDefaults\nname: default\naction: allow\n")
	var vip netip.Addr
	testnet.Eventually(t, wait, "slow.service.mesh answers a virtual IP on s1", func() error {
		ips, err := s.lookupA("slow.service.mesh")
		if err != nil || len(ips) != 1 || !netip.MustParsePrefix("127.253.0.0/16").Contains(ips[0]) {
			return fmt.Errorf("answers %v, %v", ips, err)
		}
		vip = ips[0]
		return nil
	})
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(vip, uint16(port)))

	type result struct {
		body string
		err  error
	}
	inFlight := make(chan result, 1)
	testnet.Eventually(t, wait, "a request from s1 reaches slow on c1", func() error {
		go func() {
			body, err := get(url)
			inFlight <- result{body, err}
		}()
		select {
		case <-entered:
			return nil
		case r := <-inFlight:
			return fmt.Errorf("request ended before the handler: %q, %v", r.body, r.err)
		}
	})

	// The local API shows the stream s1 holds open to c1.
	if st := tunnelStatus(t, c); st.State != "serving" || len(st.Peers) != 1 || st.Peers[0].Node != "s1" || st.Peers[0].StreamsIn != 1 {
		t.Fatalf("c1's tunnel status %+v, want serving, with s1 holding 1 stream in", st)
	}

	// What cmd/meshwork does on SIGTERM.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- c.Drain(ctx) }()
	testnet.Eventually(t, wait, "s1 to see c1 leave", func() error {
		if m, ok := s.Catalog().Current().Member("c1"); !ok || m.Status != catalog.StatusLeft {
			return fmt.Errorf("c1 is %v", m.Status)
		}
		return nil
	})
	if body, err := get(url); err == nil {
		t.Errorf("a new request reached the leaving node: %q", body)
	}
	// Drain runs in its own goroutine, which may not have begun yet.
	testnet.Eventually(t, wait, "c1's tunnel to drain with 1 request in flight", func() error {
		if st := tunnelStatus(t, c); st.State != "draining" || st.InFlight != 1 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with a request in flight", err)
	default:
	}

	close(release)
	if r := <-inFlight; r.err != nil || r.body != "slow done" {
		t.Fatalf("the request in flight got %q, %v; want it to complete", r.body, r.err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// tunnelStatus asks a's local API for its tunnel's status.
func tunnelStatus(t *testing.T, a *testAgent) transport.Status {
	t.Helper()
	var st transport.Status
	if _, err := api.NewClient(a.HTTPAddr()).Do(context.Background(), http.MethodGet, transport.StatusPath, nil, nil, &st); err != nil {
		t.Fatalf("GET %s: %v", transport.StatusPath, err)
	}
	return st
}
