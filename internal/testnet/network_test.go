package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// recv reads one datagram from c, or reports none within wait: a bounded
// wait for a datagram that may rightly never come.
func recv(t *testing.T, c *PacketConn, wait time.Duration) (string, bool) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, _, err := c.ReadFrom(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", false
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n]), true
}

func packetPair(t *testing.T, n *Network) (a, b *PacketConn) {
	t.Helper()
	var err error
	if a, err = n.Host("a").ListenPacket(0); err != nil {
		t.Fatal(err)
	}
	if b, err = n.Host("b").ListenPacket(7948); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestPacketsFollowTheLinks(t *testing.T) {
	n := New(Options{})
	defer n.Close()
	a, b := packetPair(t, n)
	send := func(from, to *PacketConn, s string) {
		t.Helper()
		if _, err := from.WriteTo([]byte(s), to.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}

	send(a, b, "hello")
	if got, ok := recv(t, b, time.Second); !ok || got != "hello" {
		t.Fatalf("healthy link delivered %q, %v", got, ok)
	}

	// One direction cut: b still reaches a.
	n.SetLink("a", "b", Link{Cut: true})
	send(a, b, "lost")
	send(b, a, "back")
	if got, ok := recv(t, a, time.Second); !ok || got != "back" {
		t.Fatalf("b -> a while only a -> b is cut: %q, %v", got, ok)
	}
	if got, ok := recv(t, b, 100*time.Millisecond); ok {
		t.Fatalf("a -> b crossed a cut link: %q", got)
	}
	if s := n.Stats(); s.Lost != 1 {
		t.Fatalf("stats %+v, want 1 lost", s)
	}

	n.Heal()
	send(a, b, "healed")
	if got, ok := recv(t, b, time.Second); !ok || got != "healed" {
		t.Fatalf("after Heal: %q, %v", got, ok)
	}

	// To an address nobody holds: lost, as UDP, and counted.
	b.Close()
	send(a, b, "nobody")
	if s := n.Stats(); s.Unreachable != 1 {
		t.Fatalf("stats %+v, want 1 unreachable", s)
	}
}

func TestPacketDelayAndReorder(t *testing.T) {
	n := New(Options{})
	defer n.Close()
	a, b := packetPair(t, n)
	c, err := n.Host("c").ListenPacket(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const delay = 150 * time.Millisecond
	n.SetLink("a", "b", Link{Delay: delay})
	start := time.Now()
	a.WriteTo([]byte("slow"), b.LocalAddr())
	c.WriteTo([]byte("fast"), b.LocalAddr())
	if got, _ := recv(t, b, 5*time.Second); got != "fast" {
		t.Fatalf("first datagram %q, want the undelayed one", got)
	}
	if got, _ := recv(t, b, 5*time.Second); got != "slow" {
		t.Fatalf("second datagram %q, want the delayed one", got)
	}
	// A timer never fires early: this bound holds on any machine.
	if el := time.Since(start); el < delay {
		t.Fatalf("delayed datagram arrived after %s, before its %s delay", el, delay)
	}
}

// TestLossIsSeeded: the same seed loses the same datagrams, and the rate
// is near the one asked.
func TestLossIsSeeded(t *testing.T) {
	pattern := func(seed uint64) []bool {
		n := New(Options{Seed: seed})
		defer n.Close()
		a, b := packetPair(t, n)
		n.SetLink("a", "b", Link{Drop: 0.3})
		var got []bool
		for range 1000 {
			before := n.Stats().Lost
			a.WriteTo([]byte("x"), b.LocalAddr())
			got = append(got, n.Stats().Lost > before)
		}
		return got
	}
	p1, p2, p3 := pattern(7), pattern(7), pattern(8)
	lost, same13 := 0, true
	for i := range p1 {
		if p1[i] != p2[i] {
			t.Fatalf("datagram %d: seed 7 lost it once and not the other time", i)
		}
		if p1[i] {
			lost++
		}
		if p1[i] != p3[i] {
			same13 = false
		}
	}
	if lost < 240 || lost > 360 {
		t.Fatalf("lost %d of 1000 at a 0.3 loss rate", lost)
	}
	if same13 {
		t.Fatal("seeds 7 and 8 lost the same datagrams")
	}
}

func TestStreams(t *testing.T) {
	n := New(Options{})
	defer n.Close()
	ln, err := n.Host("b").Listen(7947)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := n.Host("a")
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(timeout time.Duration) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return a.Dial(ctx, "tcp", ln.Addr().String())
	}

	c, err := dial(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	go c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if got := s.RemoteAddr().(*net.TCPAddr).IP.String(); got != a.IP().String() {
		t.Fatalf("accepted stream comes from %s, want %s", got, a.IP())
	}

	// A cut breaks the established stream, on both ends.
	n.Partition([]string{"a"}, []string{"b"})
	if _, err := s.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read of a stream across a new partition = %v, want ECONNRESET", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write of a stream across a new partition = %v, want ECONNRESET", err)
	}
	// ... and a new dial times out.
	_, err = dial(100 * time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial across a partition = %v, want a timeout", err)
	}

	// A rejecting cut fails the dial at once.
	n.SetLink("a", "b", Link{Cut: true, Reject: true})
	if _, err := dial(time.Minute); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("dial across a rejecting cut = %v, want EHOSTUNREACH", err)
	}

	n.Heal()
	c2, err := dial(time.Second)
	if err != nil {
		t.Fatalf("dial after Heal: %v", err)
	}
	c2.Close()
	(<-accepted).Close()

	ln.Close()
	if _, err := dial(time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port = %v, want ECONNREFUSED", err)
	}
}

func TestPortsAreExclusiveAndReusable(t *testing.T) {
	n := New(Options{})
	defer n.Close()
	h := n.Host("a")
	c, err := h.ListenPacket(7946)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ListenPacket(7946); !errors.Is(err, ErrPortInUse) {
		t.Fatalf("second socket on a port = %v, want ErrPortInUse", err)
	}
	c.Close()
	c2, err := h.ListenPacket(7946)
	if err != nil {
		t.Fatalf("port not free after Close: %v", err)
	}
	c2.Close()
	if n.Host("a") != h || n.Host("b").IP() == h.IP() {
		t.Fatal("hosts do not keep one address each")
	}
}

func TestEventuallyReportsTheLastError(t *testing.T) {
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { recover() }() // Fatalf ends the goroutine through runtime.Goexit in a real T; here it panics
		Eventually(ft, 30*time.Millisecond, "the moon", func() error { return errors.New("still waxing") })
	}()
	<-done
	if want := "timed out after 30ms waiting for the moon: still waxing"; ft.msg != want {
		t.Fatalf("Eventually failed with %q, want %q", ft.msg, want)
	}
	calls := 0
	Eventually(t, time.Second, "the third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
}

type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic("fatal")
}
