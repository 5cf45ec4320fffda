//go:build e2e

// Command sandboxprobe checks, inside the sandbox of meshwork.service, the
// privileges the agent depends on. The booted-hosts scenario runs it as a
// copy of the installed unit with only ExecStart changed. It
//
//   - listens on a VIP-style loopback address at a port below 1024
//     (CAP_NET_BIND_SERVICE, and 127/8 being local);
//   - answers each connection with the uid that owns the caller's socket,
//     found through NETLINK_SOCK_DIAG, which is how the agent maps a local
//     caller to a service: the caller runs as another user, so this shows
//     whether the sandbox lets the agent see other users' sockets;
//   - reports whether it can write its state directory and whether /etc is
//     read-only to it;
//   - tells systemd READY=1 once it listens.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/meshwork/meshwork/internal/sdnotify"
)

func main() {
	listen := flag.String("listen", "127.77.0.1:80", "address to accept callers on")
	flag.Parse()
	ln, err := net.Listen("tcp4", *listen)
	if err != nil {
		log.Fatalf("listen %s: %v", *listen, err)
	}
	files := fileChecks()
	if err := sdnotify.Ready(); err != nil {
		log.Fatalf("notify: %v", err)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatalf("accept: %v", err)
		}
		remote := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
		local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
		uid, err := peerUID(remote, local)
		if err != nil {
			fmt.Fprintf(conn, "error=%q %s\n", err.Error(), files)
		} else {
			fmt.Fprintf(conn, "uid=%d self=%d %s\n", uid, os.Getuid(), files)
		}
		conn.Close()
	}
}

// fileChecks reports what the sandbox allows on the file system.
func fileChecks() string {
	state := "state_write=ok"
	dir := os.Getenv("STATE_DIRECTORY")
	if err := os.WriteFile(filepath.Join(dir, "probe"), []byte("ok\n"), 0o600); dir == "" || err != nil {
		state = fmt.Sprintf("state_write=%q", fmt.Sprint(dir, err))
	}
	etc := "etc_write=denied"
	if err := os.WriteFile("/etc/meshwork-probe", []byte("x"), 0o600); err == nil {
		os.Remove("/etc/meshwork-probe")
		etc = "etc_write=allowed"
	}
	return state + " " + etc
}

// Netlink and inet_diag constants from <linux/sock_diag.h> and
// <linux/inet_diag.h>.
const (
	netlinkSockDiag  = 4
	sockDiagByFamily = 20
	tcpEstablished   = 1
	reqLen           = 56 // struct inet_diag_req_v2
	msgLen           = 72 // struct inet_diag_msg
)

// peerUID dumps the established IPv4 TCP sockets and returns the owner of the
// one whose source is remote and destination is local: the caller's end.
func peerUID(remote, local netip.AddrPort) (uint32, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	defer syscall.Close(fd)

	req := make([]byte, syscall.NLMSG_HDRLEN+reqLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	r := req[syscall.NLMSG_HDRLEN:]
	r[0] = syscall.AF_INET
	r[1] = syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], 1<<tcpEstablished)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netlink send: %w", err)
	}

	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return 0, errors.New("no socket from " + remote.String() + " to " + local.String())
			case syscall.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					return 0, fmt.Errorf("netlink: %w", syscall.Errno(-int32(binary.NativeEndian.Uint32(m.Data))))
				}
				return 0, errors.New("netlink: short error message")
			}
			if len(m.Data) < msgLen {
				continue
			}
			d := m.Data
			sport := binary.BigEndian.Uint16(d[4:])
			dport := binary.BigEndian.Uint16(d[6:])
			src := netip.AddrFrom4([4]byte(d[8:12]))
			dst := netip.AddrFrom4([4]byte(d[24:28]))
			if netip.AddrPortFrom(src, sport) == remote && netip.AddrPortFrom(dst, dport) == local {
				return binary.NativeEndian.Uint32(d[64:]), nil
			}
		}
	}
}
