package agent

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/internal/testnet"
)

// TestAgentsRememberTheirPeers checks the wiring of membership.go: each
// agent keeps the agents it has seen in data_dir/gossip/peers.json, which it
// rejoins through after a restart, with the server flag that decides when
// it is in contact.
func TestAgentsRememberTheirPeers(t *testing.T) {
	s, c, _ := serverAndClient(t, "127.247.0.0/16", "127.248.0.0/16", nil)
	for _, tc := range []struct {
		a          *testAgent
		peer       string
		peerServer bool
	}{{s, "c1", false}, {c, "s1", true}} {
		file := filepath.Join(tc.a.cfg.DataDir, "gossip", "peers.json")
		testnet.Eventually(t, wait, tc.a.cfg.Node+" remembers "+tc.peer, func() error {
			ps, err := gossip.ReadPeersFile(file, tc.a.cfg.Node)
			if err != nil {
				return err
			}
			if len(ps) != 1 || ps[0].Name != tc.peer || ps[0].Server != tc.peerServer || ps[0].Status != "alive" {
				return fmt.Errorf("it remembers %+v", ps)
			}
			return nil
		})
	}
}
