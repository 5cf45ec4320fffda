package agent

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/freeport"
	"github.com/meshwork/meshwork/internal/testnet"
)

// TestServiceIdentityPolicy runs a server agent and a client agent on
// loopback, with real Raft, CA and QUIC tunnels. The client's service app
// calls web on the server through an explicit upstream, so it claims app's
// identity. Once a ServiceIdentity document lists only the server for app,
// the server refuses the claim at once, although the client's certificate
// still names app, and the client's next certificate leaves app out while
// keeping its node and its other services.
func TestServiceIdentityPolicy(t *testing.T) {
	port, err := freeport.TCP("127.0.0.1") // for the upstream's local_bind
	if err != nil {
		t.Fatal(err)
	}
	bind := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s, c, _ := serverAndClient(t, "127.253.0.0/16", "127.254.0.0/16",
		[]api.ServiceDefinition{{Name: "app", Upstreams: []api.Upstream{{Service: "web", LocalBind: bind}}}})
	const appID, apiID = "spiffe://meshwork.local/svc/app", "spiffe://meshwork.local/svc/api"
	testnet.Eventually(t, wait, "c1's leaf names app", func() error {
		leaf, err := c.CA().Manager().Leaf()
		if err != nil {
			return err
		}
		if !slices.Contains(leaf.IDs, appID) {
			return fmt.Errorf("leaf IDs %v", leaf.IDs)
		}
		return nil
	})

	applyPolicy(t, s.Raft(), "kind: IntentionDefaults\nname: default\naction: allow\n")
	url := "http://" + bind + "/"
	testnet.Eventually(t, wait, "app on c1 calls web on s1", func() error { return getBody(url, "web-s1 /") })

	applyPolicy(t, s.Raft(), "kind: ServiceIdentity\nname: app\nnodes: [s1]\n")
	testnet.Eventually(t, wait, "s1 refuses c1's claim to app", func() error {
		if _, err := get(url); err == nil {
			return errors.New("the call still goes through")
		}
		if n := counterValue(t, s.reg, "meshwork_transport_refused_streams_total", map[string]string{"reason": "unauthorized"}); n < 1 {
			return fmt.Errorf("%v unauthorized refusals counted on s1", n)
		}
		return nil
	})

	// A new local service makes c1 ask for a new leaf: it names api and the
	// node, and the CA withholds app.
	if err := c.Local().Register(api.ServiceDefinition{Name: "api", Port: 9}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, wait, "c1's next leaf withholds app", func() error {
		leaf, err := c.CA().Manager().Leaf()
		if err != nil {
			return err
		}
		want := []string{"spiffe://meshwork.local/node/c1", apiID}
		if !slices.Equal(leaf.IDs, want) || !slices.Equal(leaf.Withheld, []string{"app"}) {
			return fmt.Errorf("leaf IDs %v, withheld %v; want %v, withheld [app]", leaf.IDs, leaf.Withheld, want)
		}
		return nil
	})
	if n := counterValue(t, s.reg, "meshwork_ca_services_withheld_total", nil); n < 1 {
		t.Fatalf("withheld services counted %v times on s1", n)
	}
}
