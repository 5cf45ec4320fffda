package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/transport"
	"github.com/meshwork/meshwork/transport/transporttest"
	"github.com/meshwork/meshwork/transport/udpgro"
)

// rawResult is the capacity of one quic-go stream on this machine.
type rawResult struct {
	bps float64
	gso bool
	gro bool // the sockets had receive offload (udpgro) on
	// cpuPerGB is the CPU seconds this process spent per GB moved, both
	// ends together.
	cpuPerGB float64
}

// rawQUIC measures one quic-go stream on loopback for d, with what the
// tunnel uses: TLS 1.3 with mutual ECDSA P-256 certificates verified
// against the root, the tunnel's quic-go configuration, 7 MiB UDP buffers
// and 64 KiB writes. Sender and receiver run in this process, one
// goroutine each, as the two agents' copy loops would.
func rawQUIC(ctx context.Context, ca *transporttest.CA, d time.Duration, gro bool) (rawResult, error) {
	cfg := transport.Config{Node: "raw", TrustDomain: trustDomain}
	if err := cfg.Validate(); err != nil {
		return rawResult{}, err
	}
	qc := cfg.QUIC()
	ids := map[string]*transporttest.Identity{}
	for _, node := range []string{"server", "client"} {
		leaf, err := ca.IssueNode(node, nil, time.Hour)
		if err != nil {
			return rawResult{}, err
		}
		ids[node] = transporttest.NewIdentity(trustDomain, leaf, ca)
	}
	verify := func(id *transporttest.Identity) func([][]byte, [][]*x509.Certificate) error {
		return func(raw [][]byte, _ [][]*x509.Certificate) error { _, err := id.VerifyPeer(raw); return err }
	}
	serverTLS := &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPN},
		GetCertificate:        ids["server"].GetCertificate,
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verify(ids["server"]),
	}
	clientTLS := &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPN},
		GetClientCertificate:  ids["client"].GetClientCertificate,
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verify(ids["client"]),
	}
	socket := func() (*net.UDPConn, error) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		c.SetReadBuffer(cfg.SocketBuffer)
		c.SetWriteBuffer(cfg.SocketBuffer)
		return c, nil
	}
	spc, err := socket()
	if err != nil {
		return rawResult{}, err
	}
	defer spc.Close()
	cpc, err := socket()
	if err != nil {
		return rawResult{}, err
	}
	defer cpc.Close()
	var sconn, cconn net.PacketConn = spc, cpc
	if gro {
		sconn, _ = udpgro.Wrap(spc)
		cconn, _ = udpgro.Wrap(cpc)
	}
	st := &quic.Transport{Conn: sconn}
	defer st.Close()
	ct := &quic.Transport{Conn: cconn}
	defer ct.Close()
	ln, err := st.Listen(serverTLS, qc)
	if err != nil {
		return rawResult{}, err
	}
	defer ln.Close()

	type recv struct {
		n   int64
		el  time.Duration
		err error
	}
	got := make(chan recv, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			got <- recv{err: err}
			return
		}
		s, err := c.AcceptStream(ctx)
		if err != nil {
			got <- recv{err: err}
			return
		}
		buf := make([]byte, cfg.CopyBuffer)
		start := time.Now()
		var n int64
		for {
			m, err := s.Read(buf)
			n += int64(m)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				got <- recv{n: n, el: time.Since(start), err: err}
				return
			}
		}
	}()

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := ct.Dial(dctx, spc.LocalAddr(), clientTLS, qc)
	cancel()
	if err != nil {
		return rawResult{}, err
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return rawResult{}, err
	}
	buf := make([]byte, cfg.CopyBuffer)
	cpu0 := processCPU()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := s.Write(buf); err != nil {
			return rawResult{}, err
		}
	}
	s.Close()
	select {
	case r := <-got:
		if r.err != nil {
			return rawResult{}, r.err
		}
		cpu := processCPU() - cpu0
		return rawResult{
			bps:      float64(r.n*8) / r.el.Seconds(),
			gso:      c.ConnectionState().GSO,
			gro:      gro,
			cpuPerGB: cpu.Seconds() / (float64(r.n) / 1e9),
		}, nil
	case <-time.After(30 * time.Second):
		return rawResult{}, fmt.Errorf("receiver did not finish")
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
