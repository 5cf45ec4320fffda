package udpgro

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/meshwork/meshwork/transport/rawio"
)

// TestRawCallsCarryARunBothWays sends a GSO run from a wrapped socket
// (raw sendmsg) to a wrapped one (raw recvmsg), between IPv4 sockets and
// from a dual-stack IPv6 socket to an IPv4 one.
func TestRawCallsCarryARunBothWays(t *testing.T) {
	if !rawio.Enabled {
		t.Skip("raw calls turned off")
	}
	for _, tc := range []struct{ name, from string }{{"ipv4", "127.0.0.1:0"}, {"dual-stack sender", "[::]:0"}} {
		t.Run(tc.name, func(t *testing.T) {
			rx := wrapped(t)
			la, err := net.ResolveUDPAddr("udp", tc.from)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := net.ListenUDP("udp", la)
			if err != nil {
				t.Skipf("no socket on %s: %v", tc.from, err)
			}
			t.Cleanup(func() { plain.Close() })
			txc, ok := Wrap(plain)
			if !ok {
				t.Fatal("UDP_GRO refused")
			}
			tx := txc.(*Conn)
			if tx.raw == nil || rx.raw == nil {
				t.Fatal("raw calls not set up on a loopback socket")
			}

			const seg = 700
			payload := pattern(3*seg+100, seg)
			sendRun(t, tx, rx.LocalAddr(), payload, seg)
			rx.SetReadDeadline(time.Now().Add(5 * time.Second))
			ms := messages(8, 1452)
			n, err := rx.ReadBatch(ms, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for _, m := range ms[:n] {
				got = append(got, m.Buffers[0][:m.N]...)
			}
			if n != 4 || !bytes.Equal(got, payload) {
				t.Fatalf("got %d datagrams, %d bytes; want the run of 4 datagrams, %d bytes, intact", n, len(got), len(payload))
			}
			from, ok := ms[0].Addr.(*net.UDPAddr)
			wantPort := tx.LocalAddr().(*net.UDPAddr).Port
			if !ok || !from.IP.Equal(net.IPv4(127, 0, 0, 1)) || from.Port != wantPort {
				t.Fatalf("sender %v, want 127.0.0.1:%d", ms[0].Addr, wantPort)
			}
		})
	}
}

// TestRawReadHonoursDeadlineAndClose checks that a raw read waiting for a
// datagram ends at the read deadline and when the socket closes.
func TestRawReadHonoursDeadlineAndClose(t *testing.T) {
	rx := wrapped(t)
	ms := messages(1, 1452)
	rx.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := rx.ReadBatch(ms, 0); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	}
	rx.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := rx.ReadBatch(ms, 0)
		done <- err
	}()
	rx.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed socket: %v, want net.ErrClosed", err)
	}
}
