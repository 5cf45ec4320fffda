package transport

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meshwork/meshwork/policy"
)

// TestResilienceOnTheTwin cuts one of three instances off its caller on
// the network twin while requests run: the tries sent to it time out,
// are retried on the other two and get it ejected, so that every request
// succeeds; once the link heals, the instance serves again.
func TestResilienceOnTheTwin(t *testing.T) {
	apps := startScriptedApps(t, 3, func(a *scriptedApp, w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, a.name)
	})
	pol := &retryPolicy{l7Policy: newL7Policy()}
	pol.protos["web"] = "http"
	res := retries(2, 50, 100, policy.RetryGatewayError, policy.RetryReset, policy.RetryConnectFailure)
	res.Retries.PerTryTimeout = policy.Duration(200 * time.Millisecond)
	res.OutlierDetection = &policy.OutlierDetection{ConsecutiveErrors: 2, Interval: policy.Duration(10 * time.Second),
		BaseEjectionTime: policy.Duration(time.Second), MaxEjectedPercent: 50}
	pol.res["web"] = res
	m := newTwinMesh(t)
	for i, a := range apps {
		m.addAgent(fmt.Sprintf("s%d", i+1), []LocalService{{Name: "web", Address: fmt.Sprintf("127.0.0.%d", i+1), Ports: []int{a.port}}},
			agentOpts{deps: pol.deps})
	}
	client := m.addAgent("client", nil, agentOpts{deps: pol.deps})
	url := "http://" + client.vipAddr(t, "web", apps[0].port) + "/"
	get := getReq(url)
	eventually(t, "every instance serves", func() bool {
		load(t, url, 30, 3, get)
		return apps[0].attempts.Load() > 0 && apps[1].attempts.Load() > 0 && apps[2].attempts.Load() > 0
	})

	m.twin.Partition([]string{"client"}, []string{"s3"})
	cut := apps[2].attempts.Load()
	const n = 300
	if ok := load(t, url, n, 4, get); ok != n {
		t.Errorf("%d of %d requests succeeded while s3 was cut off", ok, n)
	}
	if got := apps[2].attempts.Load(); got != cut {
		t.Errorf("s3's app got %d requests through a cut link", got-cut)
	}
	if e := client.metric(t, "meshwork_transport_outlier_ejections_total", "service", "web"); e == 0 {
		t.Error("s3 was not ejected while its tries timed out")
	}
	if r := client.metric(t, "meshwork_l7_retries_total"); r == 0 {
		t.Error("no request was retried")
	}

	m.twin.Heal()
	eventually(t, "s3 serves again once its link heals", func() bool {
		load(t, url, 30, 3, get)
		return apps[2].attempts.Load() > cut
	})
}
