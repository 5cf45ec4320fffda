package transport

import "github.com/meshwork/meshwork/transport/tunnel"

// StatusPath is where the agent's local API serves Status.
const StatusPath = "/v1/agent/tunnel"

// The states of Status.State.
const (
	StateNotStarted = "not started"
	StateServing    = "serving"
	StateDraining   = "draining"
	StateClosed     = "closed"
)

// Status is what the data plane is doing now, for operators
// (GET /v1/agent/tunnel, `meshwork tunnel`).
type Status struct {
	Node string `json:"node"`
	// State is one of the State constants.
	State string `json:"state"`
	// Addr is the UDP address QUIC listens on, once started.
	Addr string `json:"addr,omitempty"`
	GSO  bool   `json:"gso"`
	GRO  bool   `json:"gro"`
	// UDPReceiveBuffer and UDPSendBuffer are the socket buffers granted,
	// as Linux reports them (twice what was asked).
	UDPReceiveBuffer int `json:"udp_receive_buffer"`
	UDPSendBuffer    int `json:"udp_send_buffer"`
	// InFlight counts the application connections and inbound streams
	// being carried.
	InFlight  int            `json:"in_flight"`
	Listeners []ListenerInfo `json:"listeners"`
	Peers     []PeerStatus   `json:"peers"`
	// Outliers are the instances outlier detection has ejected, or that
	// are back on probation.
	Outliers []OutlierStatus `json:"outliers,omitempty"`
}

// PeerStatus is one peer agent; see tunnel.PeerStatus.
type PeerStatus = tunnel.PeerStatus

// Status reports the transport's state, listeners and peers. It takes each
// lock briefly and never blocks on the network.
func (t *Transport) Status() Status {
	st := Status{Node: t.cfg.Node, State: StateNotStarted, InFlight: t.tun.Flight().Count()}
	switch {
	case t.closed.Load():
		st.State = StateClosed
	case t.tun.Draining():
		st.State = StateDraining
	case t.started.Load():
		st.State = StateServing
	}
	if t.started.Load() {
		st.Addr = t.Addr().String()
		st.GSO, st.GRO = t.tun.GSO(), t.tun.GRO()
		st.UDPReceiveBuffer, st.UDPSendBuffer = t.tun.SocketBuffers()
	}
	st.Listeners = t.Listeners()

	st.Peers = t.tun.Peers()
	st.Outliers = t.outliers()
	return st
}
