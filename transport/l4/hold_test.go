package l4

import (
	"strings"
	"testing"
)

// TestHeldStateParse checks the state a successor reads beside a held
// socket: what is damaged is named, never resumed.
func TestHeldStateParse(t *testing.T) {
	id := newSessionID()
	good := HeldState{Session: id.String(), PeerNode: "b", PeerAddr: "198.18.0.2:7948", Service: "echo", Port: 7070}
	if gotID, peer, err := good.parse(); err != nil || gotID != id || peer.Node != "b" || peer.Addr.String() != "198.18.0.2:7948" {
		t.Fatalf("good state: %v %v %v", gotID, peer, err)
	}
	for _, c := range []struct {
		name string
		edit func(*HeldState)
		want string
	}{
		{"short session", func(h *HeldState) { h.Session = "abcd" }, "hex bytes"},
		{"not hex", func(h *HeldState) { h.Session = strings.Repeat("zz", 16) }, "hex bytes"},
		{"bad address", func(h *HeldState) { h.PeerAddr = "b:7948" }, "peer_addr"},
		{"no node", func(h *HeldState) { h.PeerNode = "" }, "required"},
		{"no port", func(h *HeldState) { h.Port = 0 }, "required"},
	} {
		h := good
		c.edit(&h)
		if _, _, err := h.parse(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error naming %q", c.name, err, c.want)
		}
	}
}
