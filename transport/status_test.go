package transport

import (
	"context"
	"testing"
)

func TestStatusShowsListenersPeersAndStreams(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, nameThenEcho("api"))
	server := m.addAgent("server", []LocalService{{Name: "api", Ports: []int{be.port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(t, "api", be.port)
	c := dial(t, addr)
	if got := readLine(t, c); got != "api" {
		t.Fatalf("first line %q, want api", got)
	}

	st := client.tr.Status()
	if st.Node != "client" || st.State != "serving" || st.Addr != client.pc.LocalAddr().String() || !st.GRO || st.InFlight != 1 {
		t.Errorf("client status %+v, want client serving on %s with GRO and 1 in flight", st, client.pc.LocalAddr())
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Addr != addr || st.Listeners[0].Kind != "vip" || st.Listeners[0].Service != "api" {
		t.Errorf("client listeners %+v, want the VIP of api at %s", st.Listeners, addr)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("client peers %+v, want server only", st.Peers)
	}
	if p := st.Peers[0]; p.Node != "server" || !p.Connected || p.StreamsOut != 1 || p.StreamsIn != 0 || p.Addr != server.pc.LocalAddr().String() || p.Expires.IsZero() {
		t.Errorf("client's view of server %+v, want connected at %s with 1 stream out and an expiry", p, server.pc.LocalAddr())
	}
	sst := server.tr.Status()
	if len(sst.Peers) != 1 || sst.Peers[0].Node != "client" || sst.Peers[0].StreamsIn != 1 || sst.Peers[0].StreamsOut != 0 {
		t.Errorf("server's peers %+v, want client holding 1 stream in", sst.Peers)
	}

	go client.tr.Drain(context.Background())
	eventually(t, "the client to drain", client.tr.Draining)
	if st := client.tr.Status(); st.State != "draining" || len(st.Listeners) != 0 {
		t.Errorf("draining status %+v, want draining with no listeners", st)
	}
	client.tr.Close()
	if st := client.tr.Status(); st.State != "closed" || st.InFlight != 0 {
		t.Errorf("after Close %+v, want closed with nothing in flight", st)
	}
}
