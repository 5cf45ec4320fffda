package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testKey = "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadErrorsNameFileAndKey(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"unknown top-level key", "node: a\ndata_dri: b\n", []string{"bad.yaml", "line 2", "data_dri", "unknown key", `did you mean "data_dir"`}},
		{"unknown nested key", "ports:\n  http: 1\n  htp: 2\n", []string{"bad.yaml", "line 3", "ports.htp", `did you mean "http"`}},
		{"unknown key in a service", "services:\n  - name: web\n    prot: 80\n", []string{"line 3", "services[0].prot", `"port"`}},
		{"wrong type", "ports:\n  http: eighty\n", []string{"line 2", "ports.http", "eighty"}},
		{"bare number duration", "dns:\n  recursor_timeout: 30\n", []string{"line 2", "dns.recursor_timeout", "unit"}},
		{"list where a mapping belongs", "ports: [1, 2]\n", []string{"line 1", "ports", "want a mapping"}},
		{"syntax error", "node: [a\n", []string{"bad.yaml", "line"}},
		{"not a mapping", "- a\n- b\n", []string{"bad.yaml", "must be a mapping"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, t.TempDir(), "bad.yaml", tc.body)
			_, err := Load([]string{p}, nil)
			if err == nil {
				t.Fatal("Load accepted a bad file")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestMissingFileIsNotAWrongFile(t *testing.T) {
	_, err := Load([]string{filepath.Join(t.TempDir(), "nope.yaml")}, nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: %v, want ErrNotFound", err)
	}
	p := write(t, t.TempDir(), "bad.yaml", "nope: 1\n")
	if _, err := Load([]string{p}, nil); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong file: %v, want an error that is not ErrNotFound", err)
	}
	if _, err := Load(nil, []string{filepath.Join(t.TempDir(), "nodir")}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing dir: %v, want ErrNotFound", err)
	}
}

func TestConfigDirMerges(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "00-agent.yaml", "node: n1\nadvertise: 10.0.0.9\ndata_dir: /var/lib/mw\ncluster_key: "+testKey+"\nretry_join: [10.0.0.1]\nports:\n  http: 9500\n")
	write(t, dir, "10-web.yaml", "service:\n  name: web\n  port: 8080\n")
	write(t, dir, "20-more.yaml", "retry_join: [10.0.0.2]\nservices:\n  - name: api\n    port: 9090\n  - name: db\n    port: 5432\nports:\n  dns: 8601\n")
	write(t, dir, "README.txt", "not yaml: [")
	l, err := LoadAndValidate(nil, []string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.Node != "n1" || l.Ports.HTTP != 9500 || l.Ports.DNS != 8601 {
		t.Errorf("scalars not merged: node=%q http=%d dns=%d", l.Node, l.Ports.HTTP, l.Ports.DNS)
	}
	if got := strings.Join(l.RetryJoin, ","); got != "10.0.0.1,10.0.0.2" {
		t.Errorf("retry_join = %s, want both files' entries", got)
	}
	var names []string
	for _, s := range l.Services {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "web,api,db" {
		t.Errorf("services = %s, want web,api,db", got)
	}
	if o := l.Origin("services[2].port"); !strings.HasSuffix(o, "20-more.yaml:6") {
		t.Errorf("origin of services[2].port = %q, want 20-more.yaml:6", o)
	}
}

// A configured check may not take an ID of maintenance mode: the error
// names the file, the service and the reserved prefix.
func TestValidateMaintenanceCheckID(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", "node: n1\nadvertise: 10.0.0.9\ndata_dir: /tmp/x\ncluster_key: "+testKey+"\n")
	write(t, dir, "b.yaml", "services:\n  - name: web\n    port: 1\n    checks:\n      - id: _service_maintenance:web\n        ttl: 30s\n")
	_, err := LoadAndValidate(nil, []string{dir}, nil)
	if err == nil {
		t.Fatal("a check with a reserved ID accepted")
	}
	for _, w := range []string{"b.yaml:1: services[0]", `checks[0].id: "_service_maintenance:web" begins with "_service_maintenance", a prefix reserved for the checks of maintenance mode`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestValidateNamesKeyAndOrigin(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", "node: n1\nadvertise: 10.0.0.9\ndata_dir: /tmp/x\ncluster_key: "+testKey+"\n")
	write(t, dir, "b.yaml", "ports:\n  http: 70000\nbootstrap_expect: 2\nserver: true\nservices:\n  - name: web\n    port: 1\n    checks:\n      - tcp: 127.0.0.1:1\n        interval: 0s\n")
	_, err := LoadAndValidate(nil, []string{dir}, nil)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, w := range []string{"b.yaml:2: ports.http: 70000", "b.yaml:3: bootstrap_expect: 2", "b.yaml:5: services[0]", "interval"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestOverridesAndDefaults(t *testing.T) {
	p := write(t, t.TempDir(), "a.yaml", "node: n1\ndata_dir: /tmp/x\ncluster_key: "+testKey+"\nbind: 10.1.2.3\n")
	l, err := LoadAndValidate([]string{p}, nil, func(c *Config) { c.Node = "from-flag" })
	if err != nil {
		t.Fatal(err)
	}
	if l.Node != "from-flag" {
		t.Errorf("flag did not override the file: node = %q", l.Node)
	}
	if l.Advertise != "10.1.2.3" || l.Ports.Gossip != DefaultGossipPort || l.DNS.Domain != "mesh." || l.CA.LeafTTL.D() != 24*time.Hour {
		t.Errorf("defaults not applied: %+v", l.Config)
	}
	if l.Tunnel.DefaultPolicy != "deny" {
		t.Errorf("default_policy = %q, want deny outside dev", l.Tunnel.DefaultPolicy)
	}
	if l.Tunnel.DrainTimeout.D() != 10*time.Second {
		t.Errorf("drain_timeout = %v, want 10s", l.Tunnel.DrainTimeout.D())
	}
}

func TestDevNeedsNoFiles(t *testing.T) {
	l, err := LoadAndValidate(nil, nil, func(c *Config) { c.Dev = true; c.Node = "dev" })
	if err != nil {
		t.Fatalf("dev config refused: %v", err)
	}
	if !l.Server || l.BootstrapExpect != 1 || l.Bind != "127.0.0.1" || l.ClusterKey == "" || l.Tunnel.DefaultPolicy != "allow" {
		t.Errorf("dev defaults wrong: %+v", l.Config)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("node: a\nports:\n  http: 1\n"))
	f.Add([]byte("services:\n  - name: web\n    checks:\n      - http: http://x\n        interval: 1s\n"))
	f.Add([]byte("service: {name: a, port: 1, tags: [x]}\n"))
	f.Add([]byte("dns: {recursors: ['1.1.1.1:53'], service_ttl: 5s}\n"))
	f.Add([]byte("&a x: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := &Loaded{origin: map[string]string{}}
		if _, err := l.mergeBytes("fuzz.yaml", data); err != nil {
			return
		}
		l.Node = "n"
		l.DataDir = "/tmp"
		if err := l.ApplyDefaults(); err != nil {
			return
		}
		_ = l.Annotate(l.Validate())
	})
}

// TestCAAndTunnelKeys checks the keys of the ca: and tunnel: sections: each
// bad value is refused with an error naming its key, and good ones load.
func TestCAAndTunnelKeys(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	tests := []struct {
		name string
		body string
		want string // "" means valid
	}{
		{"state key file and token file", "ca:\n  state_key_file: /etc/mw/state.key\n  token_file: /etc/mw/token\n", ""},
		{"step-ca with key file and refresh", "ca:\n  provider: step-ca\n  step_ca:\n    url: https://ca:9000\n    root_fingerprint: " + strings.Repeat("ab", 32) + "\n    provisioner: mesh\n    password_file: /p\n    key_file: /k\n    roots_refresh: 10m\n", ""},
		{"step-ca without url", "ca:\n  provider: step-ca\n  step_ca:\n    root_fingerprint: " + strings.Repeat("ab", 32) + "\n    provisioner: mesh\n    password_file: /p\n", "ca.step_ca.url"},
		{"unknown provider", "ca:\n  provider: vault\n", "ca.provider"},
		{"leaf ttl too short", "ca:\n  leaf_ttl: 1s\n", "ca.leaf_ttl: 1s must be between 2s"}, // the ca package's rule (docs/pki.md)
		{"vip range of its own", "tunnel:\n  vip_range: 127.241.0.0/16\n", ""},
		{"vip range outside 127/8", "tunnel:\n  vip_range: 10.0.0.0/16\n", "tunnel.vip_range"},
		{"vip range over 127.0.0.1", "tunnel:\n  vip_range: 127.0.0.0/12\n", "127.0.0.0/16"},
		{"vip range holding the bind address", "bind: 127.242.0.5\ntunnel:\n  vip_range: 127.242.0.0/16\n", "contains bind"},
		{"vip range holding the DNS address", "addresses: {dns: 127.243.0.1}\ntunnel:\n  vip_range: 127.243.0.0/16\n", "contains addresses.dns"},
		{"default policy", "tunnel:\n  default_policy: maybe\n", "tunnel.default_policy"},
		{"max streams", "tunnel:\n  max_streams_per_peer: 0\n", ""}, // 0 is the default
		{"negative max streams", "tunnel:\n  max_streams_per_peer: -1\n", "tunnel.max_streams_per_peer"},
		{"tunnel disabled", "ports:\n  tunnel: -1\n", ""},
		{"drain timeout", "tunnel:\n  drain_timeout: 30s\n", ""},
		{"negative drain timeout", "tunnel:\n  drain_timeout: -1s\n", "tunnel.drain_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := loadCase(t, dir, base, tc.body, tc.want)
			if err == nil && strings.Contains(tc.body, "roots_refresh") && l.CA.StepCA.RootsRefresh.D() != 10*time.Minute {
				t.Errorf("roots_refresh = %s", l.CA.StepCA.RootsRefresh.D())
			}
			if err == nil && strings.Contains(tc.body, "state_key_file") && l.CA.StateKeyFile != "/etc/mw/state.key" {
				t.Errorf("state_key_file = %q", l.CA.StateKeyFile)
			}
		})
	}
}

// TestGossipKeys checks the keys of the gossip: section: each bad value is
// refused with an error naming its key, and the defaults apply.
func TestGossipKeys(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	tests := []struct {
		name string
		body string
		want string // "" means valid
	}{
		{"defaults", "", ""},
		{"every key", "gossip:\n  reconnect_timeout: 24h\n  tombstone_timeout: 12h\n  left_reconnect_timeout: 2h\n  retry_join_interval: 2s\n", ""},
		{"negative left reconnect", "gossip:\n  left_reconnect_timeout: -1s\n", "gossip.left_reconnect_timeout: -1s must be greater than 0"},
		{"left reconnect past the tombstone", "gossip:\n  tombstone_timeout: 1h\n  left_reconnect_timeout: 2h\n", "gossip.left_reconnect_timeout: 2h0m0s is longer than gossip.tombstone_timeout 1h0m0s"},
		{"short tombstone shortens the default", "gossip:\n  tombstone_timeout: 10m\n", ""},
		{"negative retry interval", "gossip:\n  retry_join_interval: -1s\n", "gossip.retry_join_interval"},
		{"misspelled key", "gossip:\n  left_reconnect: 1h\n", "gossip.left_reconnect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := loadCase(t, t.TempDir(), base, tc.body, tc.want)
			if tc.name == "defaults" && (l.Gossip.LeftReconnectTimeout.D() != 30*time.Minute || l.Gossip.RetryJoinInterval.D() != time.Second) {
				t.Errorf("defaults: %+v", l.Gossip)
			}
			if tc.name == "short tombstone shortens the default" && l.Gossip.LeftReconnectTimeout.D() != 10*time.Minute {
				t.Errorf("left_reconnect_timeout = %s, want tombstone_timeout's 10m", l.Gossip.LeftReconnectTimeout.D())
			}
			if tc.name == "every key" && l.Gossip.LeftReconnectTimeout.D() != 2*time.Hour {
				t.Errorf("left_reconnect_timeout = %s, want 2h", l.Gossip.LeftReconnectTimeout.D())
			}
		})
	}
}

// loadCase loads base then body as two files of dir and checks the outcome:
// valid when want is "", else refused with an error naming want. It
// returns what LoadAndValidate returned, for the case's own checks.
func loadCase(t *testing.T, dir, base, body, want string) (*Loaded, error) {
	t.Helper()
	write(t, dir, "00-base.yaml", base)
	write(t, dir, "10-case.yaml", body)
	l, err := LoadAndValidate(nil, []string{dir}, nil)
	switch {
	case want == "" && err != nil:
		t.Fatalf("valid config refused: %v", err)
	case want != "" && err == nil:
		t.Fatalf("config accepted, want an error naming %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not name %q", err, want)
	}
	return l, err
}

func TestTelemetryDefaultsAndErrors(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	l, err := LoadAndValidate([]string{write(t, t.TempDir(), "a.yaml", base)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tm := l.Telemetry
	if tm.Listen != "" || tm.AccessLog.Path != "" || tm.Tracing.OTLPEndpoint != "" || !*tm.ServiceMetrics {
		t.Errorf("telemetry on by default: %+v", tm)
	}
	if *tm.Tracing.SampleRate != 0.01 || tm.Tracing.QueueSize != 2048 || *tm.AccessLog.SampleRate != 1 || tm.AccessLog.RateLimit != 1000 {
		t.Errorf("telemetry defaults: %+v %+v", tm.Tracing, tm.AccessLog)
	}

	bad := base + "telemetry:\n  listen: nope\n  tracing:\n    otlp_endpoint: ftp://x\n    sample_rate: 1.5\n  access_log:\n    path: relative.log\n    sample_rate: -1\n    rate_limit: -3\n"
	_, err = LoadAndValidate([]string{write(t, t.TempDir(), "b.yaml", bad)}, nil, nil)
	if err == nil {
		t.Fatal("invalid telemetry accepted")
	}
	for _, w := range []string{"telemetry.listen", "telemetry.tracing.otlp_endpoint", "telemetry.tracing.sample_rate: 1.5", "telemetry.access_log.path", "telemetry.access_log.sample_rate: -1", "telemetry.access_log.rate_limit: -3"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}

func TestUIConfig(t *testing.T) {
	base := "node: n1\ndata_dir: /tmp/x\ncluster_key: " + testKey + "\nbind: 10.1.2.3\n"
	for _, tc := range []struct {
		name, ui string
		errs     []string // each must be named; none: valid
	}{
		{"default", "", nil},
		{"agents with a port", "ui:\n  metrics_provider: agents\n  agent_telemetry_port: 9102\n", nil},
		{"prometheus", "ui:\n  metrics_provider: prometheus\n  prometheus_url: http://prom.example:9090\n", nil},
		{"prometheus without url", "ui:\n  metrics_provider: prometheus\n", []string{"ui.prometheus_url"}},
		{"url without prometheus", "ui:\n  prometheus_url: http://prom:9090\n", []string{"ui.prometheus_url", "not prometheus"}},
		{"unknown provider", "ui:\n  metrics_provider: graphite\n", []string{"ui.metrics_provider", "graphite"}},
		{"bad port", "ui:\n  agent_telemetry_port: 70000\n", []string{"ui.agent_telemetry_port", "70000"}},
		{"unknown key", "ui:\n  theme: dark\n", []string{"theme"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadAndValidate([]string{write(t, t.TempDir(), "a.yaml", base+tc.ui)}, nil, nil)
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.errs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}
