package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"

	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// FuzzRegisterBody sends arbitrary bodies to the register endpoint (through
// the handler, without sockets): the answer is 200 or a 400 with a JSON
// message, never a panic or a 500, and a 200 really registered the service.
func FuzzRegisterBody(f *testing.F) {
	f.Add([]byte(`{"name":"web","id":"web-1","port":8080,"address":"","tags":["v1"],"meta":{},"checks":[{"http":"http://127.0.0.1:8080/health","interval":"2s"}]}`))
	f.Add([]byte(`{"name":"db","check":{"ttl":"30s","deregister_critical_after":"1m"}}`))
	f.Add([]byte(`{"name":"x","checks":[{"tcp":"127.0.0.1:1","interval":30}]}`))
	f.Add([]byte(`{"name":"x","upstreams":[{"service":"db","local_bind":"127.0.0.1:5432"}],"user":"app"}`))
	f.Add([]byte(`{"name":"x","port":-1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))

	store := catalog.NewStore()
	reg := prometheus.NewRegistry()
	lm, err := local.New(local.Config{Node: "n1", NodeInfo: local.NodeInfo{Addr: "127.0.0.1"}},
		local.Deps{Publisher: local.PublisherFunc(func(rec catalog.Record) {
			store.Publish([]catalog.Member{{Record: rec, Status: catalog.StatusAlive}})
		}), Registerer: reg})
	if err != nil {
		f.Fatal(err)
	}
	if err := lm.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	defer lm.Close()
	srv, err := New(Config{}, Deps{Local: lm, Catalog: store, Gatherer: reg, Registerer: reg})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()

	f.Fuzz(func(t *testing.T, body []byte) {
		if !probesOnlyLoopback(body) {
			t.Skip("a check would probe a host beyond loopback")
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPut, "/v1/agent/service/register", bytes.NewReader(body))
		req.Host = "127.0.0.1:8500" // httptest's example.com is refused (DNS rebinding)
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var svc api.AgentService
			if err := json.Unmarshal(rec.Body.Bytes(), &svc); err != nil {
				t.Fatalf("200 with a body that is not a service: %s", rec.Body)
			}
			if _, ok := lm.Service(svc.ID); !ok {
				t.Fatalf("200 but service %q is not registered", svc.ID)
			}
			// Keep the checks from piling up across inputs.
			if err := lm.Deregister(svc.ID); err != nil {
				t.Fatal(err)
			}
		case http.StatusBadRequest:
			var eb struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
				t.Fatalf("400 without a JSON message: %s", rec.Body)
			}
		default:
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
	})
}

// probesOnlyLoopback reports whether every HTTP and TCP check the body could
// register targets loopback: a registered check probes at once, and tests
// send traffic nowhere else.
func probesOnlyLoopback(body []byte) bool {
	var def api.ServiceDefinition
	if json.Unmarshal(body, &def) != nil {
		return true // refused before any check starts
	}
	checks := def.Checks
	if def.Check != nil {
		checks = append(checks, *def.Check)
	}
	for _, c := range checks {
		host := ""
		switch {
		case c.HTTP != "":
			u, err := url.Parse(c.HTTP)
			if err != nil {
				continue
			}
			host = u.Hostname()
		case c.TCP != "":
			h, _, err := net.SplitHostPort(c.TCP)
			if err != nil {
				continue
			}
			host = h
		default:
			continue
		}
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}
