package api

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const exampleJSON = `{"name":"web","id":"web-1","port":8080,"address":"","tags":["v1"],"meta":{},"checks":[{"http":"http://127.0.0.1:8080/health","interval":"2s"}]}`

const exampleYAML = `name: web
id: web-1
port: 8080
tags: [v1]
checks:
  - http: http://127.0.0.1:8080/health
    interval: 2s
    deregister_critical_after: 1m
  - ttl: 30s
    id: web-ttl
upstreams:
  - service: db
    local_bind: 127.0.0.1:5432
user: www-data
`

func TestDecodeServiceDefinition(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		d, err := DecodeServiceDefinition([]byte(exampleJSON))
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != "web-1" || d.Checks[0].Interval.D() != 2*time.Second {
			t.Fatalf("decoded %+v", d)
		}
	})
	t.Run("yaml", func(t *testing.T) {
		d, err := DecodeServiceDefinition([]byte(exampleYAML))
		if err != nil {
			t.Fatal(err)
		}
		if d.Checks[0].DeregisterCriticalAfter.D() != time.Minute || d.Checks[1].TTL.D() != 30*time.Second ||
			d.Upstreams[0].LocalBind != "127.0.0.1:5432" || d.User != "www-data" {
			t.Fatalf("decoded %+v", d)
		}
	})
	t.Run("testdata files", func(t *testing.T) {
		files, _ := filepath.Glob("testdata/*.service.*")
		if len(files) == 0 {
			t.Fatal("no testdata")
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeServiceDefinition(b); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	})

	bad := []struct {
		name, in, want string
		sentinel       error
	}{
		{"empty", "  \n", "the document is empty", ErrBadDefinition},
		{"json unknown key", `{"name":"web","prot":1}`, `unknown field "prot"`, ErrBadDefinition},
		{"json wrong type", `{"name":"web","port":"80"}`, `field "port"`, ErrBadDefinition},
		{"json duration number", `{"name":"web","checks":[{"tcp":"a:1","interval":30}]}`, `field "checks.interval"`, ErrBadDefinition},
		{"json syntax", `{"name":`, "JSON ends too early", ErrBadDefinition},
		{"json trailing", `{"name":"web"} {}`, "trailing data", ErrBadDefinition},
		{"json invalid", `{"name":"web","port":70000}`, `service "web": port: 70000 is out of range`, ErrInvalid},
		{"yaml unknown key", "name: web\nprot: 1\n", `line 2: field prot not found`, ErrBadDefinition},
		{"yaml duration number", "name: web\ncheck:\n  tcp: a:1\n  interval: 30\n", `line 4: duration "30"`, ErrBadDefinition},
		{"yaml wrong type", "name: web\nport: [1]\n", `line 2`, ErrBadDefinition},
		{"yaml two docs", "name: web\n---\nname: db\n", "more than one YAML document", ErrBadDefinition},
		{"yaml syntax", "name: [web\n", "line", ErrBadDefinition},
		{"yaml invalid", "name: web\ncheck:\n  tcp: a:1\n  interval: 0s\n", `service "web": check.interval: "0s" must be > 0`, ErrInvalid},
		{"yaml list", "- name: web\n", "cannot unmarshal", ErrBadDefinition},
		{"too big", strings.Repeat(" ", MaxDefinitionSize+1), "at most", ErrBadDefinition},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeServiceDefinition([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.sentinel) {
				t.Fatalf("error = %v, want %v containing %q", err, tc.sentinel, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q spans several lines", err)
			}
		})
	}
}

// FuzzDecodeServiceDefinition feeds arbitrary JSON and YAML to the decoder:
// it must never panic, and whatever it accepts must validate, survive
// Normalize, and round-trip through JSON unchanged.
func FuzzDecodeServiceDefinition(f *testing.F) {
	f.Add([]byte(exampleJSON))
	f.Add([]byte(exampleYAML))
	f.Add([]byte(`{"name":"a","check":{"ttl":"1s"}}`))
	f.Add([]byte("name: a\nports: [{name: x, port: 1}]\nmeta: {k: v}\n"))
	f.Add([]byte(`{"name":"a","checks":[{"tcp":"[::1]:80","interval":"1s","timeout":"1s"}]}`))
	f.Add([]byte("name: &a x\nid: *a\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeServiceDefinition(data)
		if err != nil {
			if !errors.Is(err, ErrBadDefinition) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			return
		}
		n := d.Normalize()
		if err := n.Validate(); err != nil {
			t.Fatalf("normalized definition no longer validates: %v", err)
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := DecodeServiceDefinition(b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if !reflect.DeepEqual(back.Normalize(), n) {
			t.Fatalf("round trip changed the definition:\n%+v\n%+v", back.Normalize(), n)
		}
	})
}
