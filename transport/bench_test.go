package transport

import (
	"io"
	"net"
	"testing"
)

// BenchmarkRoundTrip measures one 1 KiB request and response on a kept-alive
// connection, directly and through two agents, to show what the tunnel adds
// per round trip. Run it on a quiet machine:
//
//	go test -run '^$' -bench RoundTrip ./transport/
func BenchmarkRoundTrip(b *testing.B) {
	be := startBackendB(b)
	for _, name := range []string{"direct", "mesh"} {
		b.Run(name, func(b *testing.B) {
			addr := be.Addr().String()
			if name == "mesh" {
				m := newMesh(b)
				port := be.Addr().(*net.TCPAddr).Port
				m.addAgent("server", []LocalService{{Name: "echo", Ports: []int{port}}}, agentOpts{})
				client := m.addAgent("client", nil, agentOpts{})
				addr = client.vipAddr(b, "echo", port)
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1024)
			b.SetBytes(2 * 1024)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// startBackendB starts an echo server for a benchmark.
func startBackendB(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln
}

// BenchmarkConnect measures a new TCP connection through two agents:
// connect, one byte each way, close.
func BenchmarkConnect(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var one [1]byte
				if _, err := io.ReadFull(c, one[:]); err == nil {
					c.Write(one[:])
				}
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	m := newMesh(b)
	m.addAgent("server", []LocalService{{Name: "one", Ports: []int{port}}}, agentOpts{})
	client := m.addAgent("client", nil, agentOpts{})
	addr := client.vipAddr(b, "one", port)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		var one [1]byte
		c.Write([]byte{'x'})
		if _, err := io.ReadFull(c, one[:]); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkIdentityCheck measures what a caller adds to each connect
// attempt to decide whether an instance may serve the service: the
// ServiceIdentity policy's verdict on its node. The other half, a look at
// the service identities its agent's certificate held when the connection
// came up, is tunnel's BenchmarkPeerHolds. No handshake, no lock.
func BenchmarkIdentityCheck(b *testing.B) {
	for _, bc := range []struct{ name, docs string }{
		{"no document", ""},
		{"ServiceIdentity", "kind: ServiceIdentity\nname: web\nnodes: [web-*, n2]\n"},
		{"deny mode", "kind: ServiceIdentityDefaults\nname: default\nmode: deny\n---\nkind: ServiceIdentity\nname: web\nnodes: [web-*, n2]\n"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			holders := &policyHolders{}
			holders.apply(b, bc.docs)
			var ip IdentityPolicy = holders
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := ip.MayHold("n2", "web"); !ok {
					b.Fatal("n2 may not serve web")
				}
			}
		})
	}
}
