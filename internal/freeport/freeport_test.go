package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestTCPIsBelowTheEphemeralRangeAndBindable(t *testing.T) {
	top := ephemeralStart()
	for range 20 {
		port, err := TCP("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if port < lowest || port >= top {
			t.Fatalf("port %d outside [%d, %d)", port, lowest, top)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("port %d is not bindable: %v", port, err)
		}
		ln.Close()
	}
}

func TestTCPFailsOnAnAddressNotHere(t *testing.T) {
	// 192.0.2.0/24 is for documentation; no host holds it.
	if _, err := TCP("192.0.2.1"); err == nil {
		t.Fatal("a port on an address this host lacks was reported free")
	}
}

func TestTCPAndUDPIsFreeForBoth(t *testing.T) {
	for range 20 {
		port, err := TCPAndUDP("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port %d: TCP: %v", port, err)
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			t.Fatalf("port %d: UDP: %v", port, err)
		}
		pc.Close()
	}
}
