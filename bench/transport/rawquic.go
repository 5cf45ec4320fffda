package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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
	// cpuPerGB is the CPU seconds both ends spent per GB moved.
	cpuPerGB float64
}

// rawConfig is what the parent hands a raw quic-go child, as JSON.
type rawConfig struct {
	CertFile  string        `json:"cert_file"`
	KeyFile   string        `json:"key_file"`
	RootsFile string        `json:"roots_file"`
	GRO       bool          `json:"gro"`
	Target    string        `json:"target,omitempty"` // the receiver, for the sender
	Duration  time.Duration `json:"duration"`
}

// rawDone is a raw child's last line, after "DONE ".
type rawDone struct {
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	GSO        bool    `json:"gso"`
}

// rawQUIC measures one quic-go stream on loopback for d, with what the
// tunnel uses: TLS 1.3 with mutual ECDSA P-256 certificates verified
// against the root, the tunnel's quic-go configuration, its UDP buffers
// and CopyBuffer-sized writes. The receiver runs on host B and the sender
// on host A, each a process of its own, as the two agents are.
func rawQUIC(ctx context.Context, procs *procSet, a, b host, dir string, certs map[string][3]string, root string, d time.Duration, gro bool) (rawResult, error) {
	self, err := os.Executable()
	if err != nil {
		return rawResult{}, err
	}
	start := func(name string, h host, node, target string) (*proc, error) {
		rc := rawConfig{CertFile: certs[node][0], KeyFile: certs[node][1], RootsFile: root, GRO: gro, Target: target, Duration: d}
		f := filepath.Join(dir, name+".json")
		raw, _ := json.Marshal(rc)
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			return nil, err
		}
		bin, args := h.command(self, "-role", name, "-config", f)
		return procs.start(ctx, name, "READY", bin, args...)
	}
	recv, err := start("raw-receiver", b, "server", "")
	if err != nil {
		return rawResult{}, err
	}
	send, err := start("raw-sender", a, "client", recv.ready[len("READY "):])
	if err != nil {
		return rawResult{}, err
	}
	var got [2]rawDone
	for i, p := range []*proc{recv, send} {
		line, err := p.await("DONE ", d+30*time.Second)
		if err != nil {
			return rawResult{}, err
		}
		if err := json.Unmarshal([]byte(line), &got[i]); err != nil {
			return rawResult{}, fmt.Errorf("%s said %q: %w", p.name, line, err)
		}
	}
	r, s := got[0], got[1]
	return rawResult{
		bps:      float64(r.Bytes*8) / r.Seconds,
		gso:      s.GSO,
		gro:      gro,
		cpuPerGB: (r.CPUSeconds + s.CPUSeconds) / (float64(r.Bytes) / 1e9),
	}, nil
}

// rawEnd is what both raw children set up: identity, TLS, socket and
// quic-go transport.
type rawEnd struct {
	rc  rawConfig
	cfg transport.Config
	tls *tls.Config
	pc  *net.UDPConn
	tr  *quic.Transport
}

func newRawEnd(path string, server bool) (*rawEnd, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	e := &rawEnd{cfg: transport.Config{Node: "raw", TrustDomain: trustDomain}}
	if err := json.Unmarshal(b, &e.rc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := e.cfg.Validate(); err != nil {
		return nil, err
	}
	id, err := transporttest.LoadIdentity(trustDomain, e.rc.CertFile, e.rc.KeyFile, e.rc.RootsFile)
	if err != nil {
		return nil, err
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error { _, err := id.VerifyPeer(raw); return err }
	e.tls = &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPN}, VerifyPeerCertificate: verify}
	if server {
		e.tls.GetCertificate = id.GetCertificate
		e.tls.ClientAuth = tls.RequireAnyClientCert
	} else {
		e.tls.GetClientCertificate = id.GetClientCertificate
		e.tls.InsecureSkipVerify = true // verified by VerifyPeerCertificate
	}
	if e.pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		return nil, err
	}
	e.pc.SetReadBuffer(e.cfg.SocketBuffer)
	e.pc.SetWriteBuffer(e.cfg.SocketBuffer)
	var conn net.PacketConn = e.pc
	if e.rc.GRO {
		conn, _ = udpgro.Wrap(e.pc)
	}
	e.tr = &quic.Transport{Conn: conn}
	return e, nil
}

func (e *rawEnd) close() {
	e.tr.Close()
	e.pc.Close()
}

func printDone(d rawDone) {
	b, _ := json.Marshal(d)
	fmt.Println("DONE " + string(b))
}

// runRawReceiver accepts one connection and one stream, reads it to its
// end, closes the connection (which tells the sender it may stop) and
// prints what it received.
func runRawReceiver(path string) error {
	e, err := newRawEnd(path, true)
	if err != nil {
		return err
	}
	defer e.close()
	ln, err := e.tr.Listen(e.tls, e.cfg.QUIC())
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println("READY " + e.pc.LocalAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), e.rc.Duration+time.Minute)
	defer cancel()
	c, err := ln.Accept(ctx)
	if err != nil {
		return err
	}
	s, err := c.AcceptStream(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, e.cfg.CopyBuffer)
	start, cpu0 := time.Now(), processCPU()
	var n int64
	for {
		m, err := s.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	el, cpu := time.Since(start), processCPU()-cpu0
	c.CloseWithError(0, "")
	printDone(rawDone{Bytes: n, Seconds: el.Seconds(), CPUSeconds: cpu.Seconds()})
	return nil
}

// runRawSender writes to one stream for the configured duration, then
// waits for the receiver to close the connection once it has read all.
func runRawSender(path string) error {
	e, err := newRawEnd(path, false)
	if err != nil {
		return err
	}
	defer e.close()
	target, err := net.ResolveUDPAddr("udp", e.rc.Target)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.rc.Duration+time.Minute)
	defer cancel()
	c, err := e.tr.Dial(ctx, target, e.tls, e.cfg.QUIC())
	if err != nil {
		return err
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	buf := make([]byte, e.cfg.CopyBuffer)
	cpu0 := processCPU()
	for deadline := time.Now().Add(e.rc.Duration); time.Now().Before(deadline); {
		if _, err := s.Write(buf); err != nil {
			return err
		}
	}
	s.Close()
	select {
	case <-c.Context().Done():
	case <-ctx.Done():
		return errors.New("the receiver did not close the connection")
	}
	printDone(rawDone{CPUSeconds: (processCPU() - cpu0).Seconds(), GSO: c.ConnectionState().GSO})
	return nil
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
