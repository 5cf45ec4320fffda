package tunnel

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestPeerStatusShowsBackoff(t *testing.T) {
	now := time.Now()
	p := &peer{node: "n2", addr: netip.MustParseAddrPort("198.18.0.2:7948"), draining: map[*peerConn]struct{}{},
		lastErr: errors.New("timeout: no recent network activity"), failUntil: now.Add(time.Second)}
	ps := p.status(now)
	if ps.Connected || ps.LastError != "timeout: no recent network activity" || !ps.RetryAt.Equal(now.Add(time.Second)) || ps.Addr != "198.18.0.2:7948" {
		t.Errorf("status %+v, want not connected, backing off with the error", ps)
	}
	if ps := p.status(now.Add(2 * time.Second)); ps.LastError != "" || !ps.RetryAt.IsZero() {
		t.Errorf("status after the backoff %+v, want no error shown", ps)
	}
}
