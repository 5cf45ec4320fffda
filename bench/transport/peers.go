package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
)

// startStunnel starts a client stunnel (plain in, TLS out with a client
// certificate) and a server stunnel (TLS in, verifying the client, plain
// out to the services), TLS 1.3 only, like the mesh.
func startStunnel(ctx context.Context, procs *procSet, a, b cpuhost.Host, dir string, certs map[string][3]string, root string, direct *path, next func() int) (*path, error) {
	out := &path{name: "stunnel", pids: map[string]int{}}
	var client, server strings.Builder
	client.WriteString("foreground = yes\npid =\nsyslog = no\ndebug = 3\n")
	server.WriteString("foreground = yes\npid =\nsyslog = no\ndebug = 3\n")
	for _, svc := range []struct {
		name   string
		target string
		dst    *string
	}{{"http", direct.http, &out.http}, {"iperf", direct.iperf, &out.iperf}, {"conn", direct.connRate, &out.connRate}} {
		front, tls := next(), next()
		*svc.dst = addr(front)
		fmt.Fprintf(&client, "[%s]\nclient = yes\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\nsslVersionMin = TLSv1.3\n",
			svc.name, addr(front), addr(tls), certs["client"][0], certs["client"][1], root)
		fmt.Fprintf(&server, "[%s]\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\nsslVersionMin = TLSv1.3\n",
			svc.name, addr(tls), svc.target, certs["server"][0], certs["server"][1], root)
	}
	// The server end first: the client end connects to it on the first
	// connection it accepts.
	for _, end := range []struct{ name, conf string }{{"stunnel-server", server.String()}, {"stunnel-client", client.String()}} {
		name, conf := end.name, end.conf
		f := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		bin, args := onHost(name, a, b).Command("stunnel4", f)
		p, err := procs.start(ctx, name, "", bin, args...)
		if err != nil {
			return nil, err
		}
		out.pids[name] = p.pid()
	}
	return out, nil
}

// startHAProxy starts a client HAProxy and a server HAProxy, TCP mode.
// With tls the client end takes plain TCP in and sends TLS out with a client
// certificate, verifying the server, and the server end verifies the client
// and sends plain TCP on, TLS 1.3 only. Without it both ends relay plain TCP:
// the least that any pair of proxies adds on this machine.
func startHAProxy(ctx context.Context, procs *procSet, a, b cpuhost.Host, dir string, certs map[string][3]string, root string, direct *path, next func() int, tls bool) (*path, error) {
	name := "haproxy"
	if !tls {
		name = "relay"
	}
	out := &path{name: name, pids: map[string]int{}}
	head := "global\n  maxconn 4096\n  log stderr format raw local0 err\ndefaults\n  mode tcp\n  log global\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
	clientTLS := fmt.Sprintf(" ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3", certs["client"][2], root)
	serverTLS := fmt.Sprintf(" ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3", certs["server"][2], root)
	if !tls {
		clientTLS, serverTLS = "", ""
	}
	client, server := head, head
	for _, svc := range []struct {
		name   string
		target string
		dst    *string
	}{{"http", direct.http, &out.http}, {"iperf", direct.iperf, &out.iperf}, {"conn", direct.connRate, &out.connRate}} {
		front, between := next(), next()
		*svc.dst = addr(front)
		client += fmt.Sprintf("listen %s\n  bind %s\n  server s %s%s\n", svc.name, addr(front), addr(between), clientTLS)
		server += fmt.Sprintf("listen %s\n  bind %s%s\n  server b %s\n", svc.name, addr(between), serverTLS, svc.target)
	}
	// The server end first, as for stunnel.
	for _, end := range []struct{ name, conf string }{{name + "-server", server}, {name + "-client", client}} {
		f := filepath.Join(dir, end.name+".cfg")
		if err := os.WriteFile(f, []byte(end.conf), 0o600); err != nil {
			return nil, err
		}
		bin, args := onHost(end.name, a, b).Command("haproxy", "-db", "-f", f)
		p, err := procs.start(ctx, end.name, "", bin, args...)
		if err != nil {
			return nil, err
		}
		out.pids[end.name] = p.pid()
	}
	return out, nil
}

// onHost is the host of a peer process: its client end on A, its server
// end on B.
func onHost(name string, a, b cpuhost.Host) cpuhost.Host {
	if strings.HasSuffix(name, "-client") {
		return a
	}
	return b
}
