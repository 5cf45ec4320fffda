package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/transport/transporttest"
)

// TestOpenStreamWithoutCreditRefuses opens streams to a real quic-go peer
// that grants two: the third fails with errNoCredit, not with the
// caller's deadline, so that the app's connection is refused promptly
// with a reason that names the limit.
func TestOpenStreamWithoutCreditRefuses(t *testing.T) {
	ca, err := transporttest.NewCA(testTD)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueNode("peer", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{ALPN}},
		&quic.Config{MaxIncomingStreams: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, ln.Addr().(*net.UDPAddr).String(),
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}}, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	for i := range 2 {
		if _, err := openStream(ctx, conn); err != nil {
			t.Fatalf("stream %d of the 2 granted: %v", i+1, err)
		}
	}
	_, err = openStream(ctx, conn)
	if !errors.Is(err, errNoCredit) {
		t.Fatalf("third stream: %v, want errNoCredit", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the caller's deadline passed: openStream waited for it")
	}
}
