package meshtest

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestNetworkFaults(t *testing.T) {
	for name, mk := range map[string]func() Network{
		"memory":   func() Network { return NewMemNetwork() },
		"loopback": func() Network { return NewLoopbackNetwork() },
	} {
		t.Run(name, func(t *testing.T) {
			n := mk()
			a, err := n.NewTransport("a")
			if err != nil {
				t.Fatal(err)
			}
			b, err := n.NewTransport("b")
			if err != nil {
				t.Fatal(err)
			}
			defer a.Shutdown()
			bAddr := memberlist.Address{Addr: n.Addr("b"), Name: "b"}

			recv := func() bool {
				select {
				case <-b.PacketCh():
					return true
				case <-time.After(200 * time.Millisecond): // bounded wait for a packet that must not come
					return false
				}
			}
			if _, err := a.WriteToAddress([]byte("hi"), bAddr); err != nil || !recv() {
				t.Fatalf("packet on a healthy link not delivered: %v", err)
			}
			n.DropPackets([]string{"a"}, []string{"b"})
			a.WriteToAddress([]byte("hi"), bAddr)
			if recv() {
				t.Fatal("packet delivered through DropPackets")
			}
			accepted := make(chan net.Conn, 1)
			go func() {
				select {
				case c := <-b.StreamCh():
					accepted <- c
				case <-time.After(5 * time.Second):
				}
			}()
			c, err := a.DialAddressTimeout(bAddr, time.Second)
			if err != nil {
				t.Fatalf("stream through DropPackets: %v", err)
			}
			c.Close()
			if sc := <-accepted; sc != nil {
				sc.Close()
			}

			n.Heal()
			n.Partition([]string{"a"}, []string{"b"})
			start := time.Now()
			_, err = a.DialAddressTimeout(bAddr, 100*time.Millisecond)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) < 100*time.Millisecond {
				t.Fatalf("dial across a partition = %v after %s, want a timeout after 100ms", err, time.Since(start))
			}
			n.Heal()

			b.Shutdown()
			if _, err := a.DialAddressTimeout(bAddr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial to a stopped transport = %v, want ECONNREFUSED", err)
			}

			// A restarted node gets its address back, as an agent on a
			// fixed port does.
			b2, err := n.NewTransport("b")
			if err != nil {
				t.Fatalf("restart b: %v", err)
			}
			defer b2.Shutdown()
			if got := n.Addr("b"); got != bAddr.Addr {
				t.Fatalf("restarted b listens at %s, want its old address %s", got, bAddr.Addr)
			}
			go func() {
				select {
				case c := <-b2.StreamCh():
					c.Close()
				case <-time.After(5 * time.Second):
				}
			}()
			c, err = a.DialAddressTimeout(bAddr, time.Second)
			if err != nil {
				t.Fatalf("dial to the restarted b: %v", err)
			}
			c.Close()
		})
	}
}
