package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDurationJSONAndYAML(t *testing.T) {
	type holder struct {
		D Duration `json:"d" yaml:"d"`
	}
	good := []struct {
		in   string
		want time.Duration
	}{
		{`"30s"`, 30 * time.Second},
		{`"1m30s"`, 90 * time.Second},
		{`"250ms"`, 250 * time.Millisecond},
		{`"0"`, 0},
	}
	for _, tc := range good {
		t.Run("json "+tc.in, func(t *testing.T) {
			var h holder
			if err := json.Unmarshal([]byte(`{"d":`+tc.in+`}`), &h); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if h.D.D() != tc.want {
				t.Fatalf("got %v, want %v", h.D, tc.want)
			}
			out, err := json.Marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			if want := `{"d":"` + tc.want.String() + `"}`; string(out) != want {
				t.Fatalf("marshal = %s, want %s", out, want)
			}
		})
		t.Run("yaml "+tc.in, func(t *testing.T) {
			var h holder
			if err := yaml.Unmarshal([]byte("d: "+tc.in+"\n"), &h); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if h.D.D() != tc.want {
				t.Fatalf("got %v, want %v", h.D, tc.want)
			}
			out, err := yaml.Marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			if want := "d: " + tc.want.String() + "\n"; string(out) != want {
				t.Fatalf("marshal = %q, want %q", out, want)
			}
		})
	}
	bad := []string{`30`, `"30"`, `"abc"`, `true`, `null`, `"1x"`}
	for _, in := range bad {
		t.Run("json bad "+in, func(t *testing.T) {
			var h holder
			err := json.Unmarshal([]byte(`{"d":`+in+`}`), &h)
			if in == "null" {
				// null leaves the zero value, as for every JSON type.
				if err != nil {
					t.Fatalf("null: %v", err)
				}
				return
			}
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) || te.Field != "d" || !strings.Contains(err.Error(), `"30s"`) {
				t.Fatalf("error = %v, want a type error on field d explaining the format", err)
			}
		})
	}
	for _, in := range []string{"30", "abc", "[1]", "{a: 1}", "1.5"} {
		t.Run("yaml bad "+in, func(t *testing.T) {
			var h holder
			err := yaml.Unmarshal([]byte("d: "+in+"\n"), &h)
			if err == nil || !strings.Contains(err.Error(), `such as "30s"`) || !strings.Contains(err.Error(), "line 1") {
				t.Fatalf("error = %v, want one naming the line and the format", err)
			}
		})
	}
}

func validDef() ServiceDefinition {
	return ServiceDefinition{
		Name:  "web",
		ID:    "web-1",
		Port:  8080,
		Ports: []ServicePort{{Name: "admin", Port: 9090}},
		Tags:  []string{"v1"},
		Meta:  map[string]string{"version": "1.2"},
		Checks: []CheckDefinition{
			{HTTP: "http://127.0.0.1:8080/health", Interval: Duration(2 * time.Second)},
			{TCP: "127.0.0.1:8080", Interval: Duration(time.Second), Timeout: Duration(time.Second)},
			{TTL: Duration(30 * time.Second), ID: "web-ttl"},
		},
		Upstreams: []Upstream{{Service: "db", LocalBind: "127.0.0.1:5432"}},
		User:      "www-data",
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(d *ServiceDefinition)
		want   string // "" = valid
	}{
		{"valid", func(d *ServiceDefinition) {}, ""},
		{"name only", func(d *ServiceDefinition) { *d = ServiceDefinition{Name: "a"} }, ""},
		{"no name", func(d *ServiceDefinition) { d.Name = "" }, `service "web-1": name: is required`},
		{"nothing", func(d *ServiceDefinition) { *d = ServiceDefinition{} }, `service: name: is required`},
		{"bad name", func(d *ServiceDefinition) { d.Name = "my web" }, `name: "my web" must be letters`},
		{"long name", func(d *ServiceDefinition) { d.Name = strings.Repeat("a", 64) }, `at most 63`},
		{"slash id", func(d *ServiceDefinition) { d.ID = "a/b" }, `id: "a/b" must not contain`},
		{"bad address", func(d *ServiceDefinition) { d.Address = "example.com" }, `address: "example.com" is not an IP address`},
		{"ipv6 address", func(d *ServiceDefinition) { d.Address = "::1" }, ""},
		{"port range", func(d *ServiceDefinition) { d.Port = 70000 }, `port: 70000 is out of range`},
		{"negative port", func(d *ServiceDefinition) { d.Port = -1 }, `port: -1 is out of range`},
		{"named port 0", func(d *ServiceDefinition) { d.Ports[0].Port = 0 }, `ports[0].port: 0 is out of range`},
		{"dup port name", func(d *ServiceDefinition) { d.Ports = append(d.Ports, ServicePort{"ADMIN", 1}) }, `ports[1].name: "ADMIN" is duplicated`},
		{"empty tag", func(d *ServiceDefinition) { d.Tags = []string{"a", ""} }, `tags[1]: "" must be`},
		{"meta key", func(d *ServiceDefinition) { d.Meta = map[string]string{"a b": "x"} }, `meta: key "a b"`},
		{"meta value", func(d *ServiceDefinition) { d.Meta = map[string]string{"k": strings.Repeat("x", 600)} }, `meta.k: value is 600 bytes`},
		{"interval zero", func(d *ServiceDefinition) { d.Checks[0].Interval = 0 }, `service "web-1": checks[0].interval: "0s" must be > 0`},
		{"interval tiny", func(d *ServiceDefinition) { d.Checks[0].Interval = 1 }, `checks[0].interval: "1ns" must be at least 10ms`},
		{"two kinds", func(d *ServiceDefinition) { d.Checks[1].HTTP = "http://x/" }, `checks[1]: must set exactly one of http, tcp and ttl (2 are set)`},
		{"no kind", func(d *ServiceDefinition) { d.Checks[1].TCP = "" }, `checks[1]: must set exactly one`},
		{"bad url", func(d *ServiceDefinition) { d.Checks[0].HTTP = "ftp://x" }, `checks[0].http: "ftp://x" must be an http`},
		{"bad method", func(d *ServiceDefinition) { d.Checks[0].Method = "GE T" }, `checks[0].method: "GE T" is not an HTTP method`},
		{"bad header", func(d *ServiceDefinition) { d.Checks[0].Header = map[string][]string{"X-A": {"a\nb"}} }, `checks[0].header.X-A: value`},
		{"method on tcp", func(d *ServiceDefinition) { d.Checks[1].Method = "GET" }, `checks[1].method: method and header are only for http checks`},
		{"bad tcp", func(d *ServiceDefinition) { d.Checks[1].TCP = "localhost" }, `checks[1].tcp: "localhost" must be host:port`},
		{"tcp port", func(d *ServiceDefinition) { d.Checks[1].TCP = "localhost:0" }, `checks[1].tcp: "localhost:0" must have a port`},
		{"negative ttl", func(d *ServiceDefinition) { d.Checks[2].TTL = -1 }, `checks[2].ttl: "-1ns" must be > 0`},
		{"ttl interval", func(d *ServiceDefinition) { d.Checks[2].Interval = Duration(time.Second) }, `checks[2].interval: "1s" is not used by a ttl check`},
		{"negative timeout", func(d *ServiceDefinition) { d.Checks[1].Timeout = -1 }, `checks[1].timeout: "-1ns" must not be negative`},
		{"status", func(d *ServiceDefinition) { d.Checks[0].Status = "ok" }, `checks[0].status: "ok" must be passing, warning or critical`},
		{"deregister negative", func(d *ServiceDefinition) { d.Checks[0].DeregisterCriticalAfter = -5 }, `checks[0].deregister_critical_after`},
		{"node maintenance check id", func(d *ServiceDefinition) { d.Checks[0].ID = NodeMaintenanceCheckID },
			`service "web-1": checks[0].id: "_node_maintenance" begins with "_node_maintenance", a prefix reserved for the checks of maintenance mode`},
		{"service maintenance check id", func(d *ServiceDefinition) { d.Checks[1].ID = ServiceMaintenanceCheckPrefix + "web-1" },
			`checks[1].id: "_service_maintenance:web-1" begins with "_service_maintenance", a prefix reserved for the checks of maintenance mode`},
		{"maintenance prefix without the colon", func(d *ServiceDefinition) {
			d.Check = &CheckDefinition{ID: "_service_maintenance_x", TTL: Duration(time.Second)}
		},
			`check.id: "_service_maintenance_x" begins with "_service_maintenance", a prefix reserved`},
		{"node maintenance prefix", func(d *ServiceDefinition) { d.Checks[2].ID = "_node_maintenance2" }, `checks[2].id: "_node_maintenance2" begins with "_node_maintenance"`},
		{"maintenance in the middle is free", func(d *ServiceDefinition) { d.Checks[2].ID = "web_node_maintenance" }, ""},
		{"dup check id", func(d *ServiceDefinition) { d.Checks[1].ID = "web-ttl" }, `checks[2].id: "web-ttl" is already used by checks[1]`},
		{"single check clashes", func(d *ServiceDefinition) {
			d.Check = &CheckDefinition{ID: "web-ttl", TTL: Duration(time.Second)}
		}, `checks[2].id: "web-ttl" is already used by check`},
		{"single check bad", func(d *ServiceDefinition) {
			d.Check = &CheckDefinition{TCP: "x:1"}
		}, `check.interval: "0s" must be > 0`},
		{"upstream name", func(d *ServiceDefinition) { d.Upstreams[0].Service = "" }, `upstreams[0].service: "" must be a service name`},
		{"upstream bind", func(d *ServiceDefinition) { d.Upstreams[0].LocalBind = "localhost:1" }, `upstreams[0].local_bind: "localhost:1" must be an ip:port`},
		{"upstream bind port 0", func(d *ServiceDefinition) { d.Upstreams[0].LocalBind = "127.0.0.1:0" }, `upstreams[0].local_bind`},
		{"upstream dup", func(d *ServiceDefinition) {
			d.Upstreams = append(d.Upstreams, Upstream{Service: "x", LocalBind: "127.0.0.1:5432"})
		}, `upstreams[1].local_bind: "127.0.0.1:5432" is duplicated`},
		{"user uid", func(d *ServiceDefinition) { d.User = "1000" }, ""},
		{"user bad", func(d *ServiceDefinition) { d.User = "a:b" }, `user: "a:b" must be a unix user name`},
		{"user leading digit", func(d *ServiceDefinition) { d.User = "1abc" }, `user: "1abc"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := validDef()
			tc.modify(&d)
			err := d.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate error = %v, want one containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	d := ServiceDefinition{
		Name:   "web",
		Check:  &CheckDefinition{HTTP: "http://127.0.0.1/", Interval: Duration(time.Second)},
		Checks: []CheckDefinition{{TTL: Duration(time.Minute)}},
		Tags:   []string{"a"},
	}
	n := d.Normalize()
	if n.ID != "web" || n.Check != nil || len(n.Checks) != 2 {
		t.Fatalf("normalized = %+v", n)
	}
	c0, c1 := n.Checks[0], n.Checks[1]
	if c0.ID != "service:web:1" || c0.Method != "GET" || c0.Timeout.D() != DefaultCheckTimeout || c0.Status != HealthCritical || c0.Name != "Service 'web' check" {
		t.Fatalf("check 0 = %+v", c0)
	}
	if c1.ID != "service:web:2" || c1.Timeout != 0 || c1.Method != "" {
		t.Fatalf("check 1 = %+v", c1)
	}
	// A deep copy: changing the result leaves the input alone.
	n.Tags[0] = "changed"
	if d.Tags[0] != "a" {
		t.Fatal("Normalize shares the tags slice")
	}
	if err := n.Validate(); err != nil {
		t.Fatalf("a normalized definition must still validate: %v", err)
	}
	single := ServiceDefinition{Name: "db", Checks: []CheckDefinition{{TCP: "x:1", Interval: Duration(time.Second)}}}.Normalize()
	if single.Checks[0].ID != "service:db" {
		t.Fatalf("single check id = %q", single.Checks[0].ID)
	}
}
