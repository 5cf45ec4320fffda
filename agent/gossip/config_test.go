package gossip

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	key, _ := GenerateKey()
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // "" = valid
	}{
		{"default LAN", func(c *Config) {}, ""},
		{"with keys and joins", func(c *Config) {
			c.Keyring = []string{key}
			c.RetryJoin = []string{"10.0.0.1", "10.0.0.2:8301", "node.example:7946", "[fd00::1]:7946", "fd00::2"}
		}, ""},
		{"no name", func(c *Config) { c.NodeName = "" }, "NodeName is empty"},
		{"name with space", func(c *Config) { c.NodeName = "web 1" }, `NodeName "web 1"`},
		{"bind not IP", func(c *Config) { c.BindAddr = "localhost" }, `BindAddr "localhost"`},
		{"port range", func(c *Config) { c.BindPort = 70000 }, "BindPort 70000"},
		{"advertise", func(c *Config) { c.AdvertiseAddr = "10.0.0" }, `AdvertiseAddr "10.0.0"`},
		{"bad key", func(c *Config) { c.Keyring = []string{key, "c2hvcnQ="} }, "Keyring[1]"},
		{"bad join port", func(c *Config) { c.RetryJoin = []string{"10.0.0.1:http"} }, `RetryJoin[0] "10.0.0.1:http"`},
		{"empty join", func(c *Config) { c.RetryJoin = []string{""} }, "RetryJoin[0]"},
		{"zero probe", func(c *Config) { c.ProbeInterval = 0 }, "ProbeInterval 0s must be positive"},
		{"probe timeout", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, "ProbeTimeout 300ms must be below ProbeInterval 300ms"},
		{"suspicion", func(c *Config) { c.SuspicionMult = 0 }, "SuspicionMult 0"},
		{"retry order", func(c *Config) { c.RetryJoinMax = time.Millisecond }, "RetryJoinMax 1ms is below RetryJoinInterval 1s"},
		{"packet", func(c *Config) { c.PacketSize = 100 }, "PacketSize 100"},
		{"fanout", func(c *Config) { c.StreamFanout = 0 }, "StreamFanout 0"},
		{"left reconnect", func(c *Config) { c.LeftReconnectTimeout = 0 }, "LeftReconnectTimeout 0s must be positive"},
		{"left reconnect past tombstone", func(c *Config) { c.LeftReconnectTimeout = 25 * time.Hour }, "LeftReconnectTimeout 25h0m0s is above TombstoneTimeout 24h0m0s"},
		{"peers file", func(c *Config) { c.PeersFile = "/var/lib/meshwork/gossip/peers.json" }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultLANConfig()
			c.NodeName = "node-1"
			tc.modify(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig naming %q", err, tc.want)
			}
		})
	}
	ft := FastTestConfig("n")
	if err := ft.Validate(); err != nil {
		t.Fatalf("FastTestConfig does not validate: %v", err)
	}
}

func TestJoinAddr(t *testing.T) {
	tests := map[string]string{
		"10.0.0.1":       "10.0.0.1:7946",
		"10.0.0.1:8000":  "10.0.0.1:8000",
		"host.example":   "host.example:7946",
		"fd00::1":        "[fd00::1]:7946",
		"[fd00::1]":      "[fd00::1]:7946",
		"[fd00::1]:8000": "[fd00::1]:8000",
	}
	for in, want := range tests {
		got, err := joinAddr(in)
		if err != nil || got != want {
			t.Errorf("joinAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestLANSuspicionWindow pins the arithmetic the defaults rely on: at 3
// members a 2 s stall is refuted well before the suspicion timeout, and at
// 50 members Lifeguard can reach its minimum.
func TestLANSuspicionWindow(t *testing.T) {
	c := DefaultLANConfig()
	// At 3 members memberlist's k = SuspicionMult-2 exceeds the n-2 = 1
	// possible confirmers, so the timeout is its minimum, from the failed
	// probe, which itself ends one probe interval after the node went quiet.
	silence := c.ProbeInterval + time.Duration(c.SuspicionMult)*c.ProbeInterval
	if silence < 3*time.Second {
		t.Fatalf("a node is declared dead after %s of silence at 3 members; want at least 3s to ride out a 2s stall", silence)
	}
	if k := c.SuspicionMult - 2; k > 50-2 {
		t.Fatalf("Lifeguard wants %d confirmations, more than 50 members can give", k)
	}
}

// TestLANRejoinBudget pins the arithmetic behind the join timers: once a
// fault ends, every catalog is whole within 10 s. A node out of contact
// waits at most RetryJoinMax (+25% jitter) between attempts, a node in
// contact at most ReconnectInterval (+25%) between reconnects; what is left
// of the 10 s is for the push/pull of the join and gossip (well under 1 s).
func TestLANRejoinBudget(t *testing.T) {
	c := DefaultLANConfig()
	if w := c.RetryJoinMax + c.RetryJoinMax/4; w > 7*time.Second {
		t.Fatalf("an agent out of contact may wait %s between attempts; want at most 7s of the 10s goal", w)
	}
	if w := c.ReconnectInterval + c.ReconnectInterval/4; w > 3*time.Second {
		t.Fatalf("an agent in contact may wait %s between reconnects; want at most 3s", w)
	}
	// In a large cluster each node tries less often, but many nodes try.
	for _, n := range []int{32, 64, 300, 1000} {
		each := scaleInterval(c.ReconnectInterval, n)
		if cluster := each / time.Duration(n); cluster > 100*time.Millisecond {
			t.Fatalf("at %d members the cluster tries a gone member every %s, want at least every 100ms", n, cluster)
		}
		if each > 20*time.Second {
			t.Fatalf("at %d members each node tries every %s", n, each)
		}
	}
	if scaleInterval(c.ReconnectInterval, 300) <= c.ReconnectInterval {
		t.Fatal("the reconnect interval is not stretched at 300 members")
	}
	if c.LeftReconnectTimeout > c.TombstoneTimeout || c.LeftReconnectTimeout < 10*time.Minute {
		t.Fatalf("LeftReconnectTimeout %s: want a host's reboot (10 min) and at most TombstoneTimeout", c.LeftReconnectTimeout)
	}
}
