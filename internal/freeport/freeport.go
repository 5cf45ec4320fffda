// Package freeport picks a loopback port for a process that must be told its
// address before it binds it, such as a CA started as a child process.
//
// Asking the kernel for port 0, closing, and handing the port on leaves a
// window in which any outgoing connection on the machine may be given the
// same port, since the kernel draws both from its ephemeral range. Ports
// below that range are never handed out implicitly, so only another
// explicit bind can take them in the window.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowest is the bottom of the range drawn from; the ports below it are
// where well-known services sit.
const lowest = 10000

// attempts bounds the ports tried before giving up.
const attempts = 100

// TCP returns a port on which host has no TCP listener now, and which the
// kernel does not give to outgoing connections.
func TCP(host string) (int, error) {
	return pick(host, "TCP", func(addr string) error {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
		}
		return err
	})
}

// TCPAndUDP returns a port like TCP's on which host also has no UDP
// socket, for a server that takes both, such as DNS.
func TCPAndUDP(host string) (int, error) {
	return pick(host, "TCP and UDP", func(addr string) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		defer ln.Close()
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			pc.Close()
		}
		return err
	})
}

// pick draws ports below the ephemeral range until bindable(host:port)
// succeeds, at most attempts times.
func pick(host, what string, bindable func(addr string) error) (int, error) {
	top := ephemeralStart()
	var err error
	for range attempts {
		port := lowest + rand.IntN(top-lowest)
		if err = bindable(net.JoinHostPort(host, strconv.Itoa(port))); err == nil {
			return port, nil
		}
	}
	return 0, fmt.Errorf("freeport: no port free for %s on %s below %d after %d tries: %w", what, host, top, attempts, err)
}

// ephemeralStart is the first port of the kernel's ephemeral range, or
// Linux's default when it cannot be read or leaves no room below.
func ephemeralStart() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return linuxDefault
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= lowest {
		return linuxDefault
	}
	return n
}
