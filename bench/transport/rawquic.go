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

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
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
func rawQUIC(ctx context.Context, procs *procSet, a, b cpuhost.Host, dir string, certs map[string][3]string, root string, d time.Duration, gro bool) (rawResult, error) {
	self, err := os.Executable()
	if err != nil {
		return rawResult{}, err
	}
	start := func(name string, h cpuhost.Host, node, target string) (*proc, error) {
		rc := rawConfig{CertFile: certs[node][0], KeyFile: certs[node][1], RootsFile: root, GRO: gro, Target: target, Duration: d}
		f := filepath.Join(dir, name+".json")
		raw, _ := json.Marshal(rc)
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			return nil, err
		}
		bin, args := h.Command(self, "-role", name, "-config", f)
		return procs.startEnv(ctx, name, "READY", agentEnvironment(), bin, args...)
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

// rawEnd is one end of a raw quic-go stream: identity, TLS, socket and
// quic-go transport.
type rawEnd struct {
	rc  rawConfig
	cfg transport.Config
	tls *tls.Config
	pc  *net.UDPConn
	tr  *quic.Transport
}

// newRawEnd sets up the receiving end (server) or the sending one.
func newRawEnd(rc rawConfig, server bool) (*rawEnd, error) {
	e := &rawEnd{rc: rc, cfg: transport.Config{Node: "raw", TrustDomain: trustDomain}}
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

// listen starts the receiving end.
func (e *rawEnd) listen() (*quic.Listener, error) { return e.tr.Listen(e.tls, e.cfg.QUIC()) }

// receive accepts one connection and one stream, reads it to its end and
// closes the connection, which tells the sender it may stop. It returns
// what it received.
func (e *rawEnd) receive(ln *quic.Listener) (rawDone, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.rc.Duration+time.Minute)
	defer cancel()
	c, err := ln.Accept(ctx)
	if err != nil {
		return rawDone{}, err
	}
	s, err := c.AcceptStream(ctx)
	if err != nil {
		return rawDone{}, err
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
			return rawDone{}, err
		}
	}
	el, cpu := time.Since(start), processCPU()-cpu0
	c.CloseWithError(0, "")
	return rawDone{Bytes: n, Seconds: el.Seconds(), CPUSeconds: cpu.Seconds()}, nil
}

// send writes to one stream for the configured duration, then waits for
// the receiver to close the connection once it has read all. ready is
// called once the stream is open.
func (e *rawEnd) send(target net.Addr, ready func()) (rawDone, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.rc.Duration+time.Minute)
	defer cancel()
	c, err := e.tr.Dial(ctx, target, e.tls, e.cfg.QUIC())
	if err != nil {
		return rawDone{}, err
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return rawDone{}, err
	}
	ready()
	buf := make([]byte, e.cfg.CopyBuffer)
	cpu0 := processCPU()
	for deadline := time.Now().Add(e.rc.Duration); time.Now().Before(deadline); {
		if _, err := s.Write(buf); err != nil {
			return rawDone{}, err
		}
	}
	s.Close()
	select {
	case <-c.Context().Done():
	case <-ctx.Done():
		return rawDone{}, errors.New("the receiver did not close the connection")
	}
	return rawDone{CPUSeconds: (processCPU() - cpu0).Seconds(), GSO: c.ConnectionState().GSO}, nil
}

// rawQUICInProcess is rawQUIC with both ends in this process, unpinned:
// two goroutines of one Go runtime, which hand packets to each other
// without a process switch. It is a reference, not what two hosts do.
func rawQUICInProcess(dir string, certs map[string][3]string, root string, d time.Duration) (rawResult, error) {
	end := func(node string, server bool) (*rawEnd, error) {
		return newRawEnd(rawConfig{CertFile: certs[node][0], KeyFile: certs[node][1], RootsFile: root, Duration: d}, server)
	}
	recv, err := end("server", true)
	if err != nil {
		return rawResult{}, err
	}
	defer recv.close()
	send, err := end("client", false)
	if err != nil {
		return rawResult{}, err
	}
	defer send.close()
	ln, err := recv.listen()
	if err != nil {
		return rawResult{}, err
	}
	defer ln.Close()
	type result struct {
		d   rawDone
		err error
	}
	got := make(chan result, 1)
	go func() {
		r, err := recv.receive(ln)
		got <- result{r, err}
	}()
	cpu0 := processCPU()
	s, err := send.send(recv.pc.LocalAddr(), func() {})
	if err != nil {
		return rawResult{}, err
	}
	r := <-got
	if r.err != nil {
		return rawResult{}, r.err
	}
	return rawResult{
		bps:      float64(r.d.Bytes*8) / r.d.Seconds,
		gso:      s.GSO,
		cpuPerGB: (processCPU() - cpu0).Seconds() / (float64(r.d.Bytes) / 1e9),
	}, nil
}

// runRawRole runs a raw quic-go child: the receiver prints its address,
// the sender prints READY once its stream is open, and both print what
// they did.
func runRawRole(path string, receiver bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rc rawConfig
	if err := json.Unmarshal(b, &rc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	e, err := newRawEnd(rc, receiver)
	if err != nil {
		return err
	}
	defer e.close()
	var done rawDone
	if receiver {
		ln, err := e.listen()
		if err != nil {
			return err
		}
		defer ln.Close()
		fmt.Println("READY " + e.pc.LocalAddr().String())
		done, err = e.receive(ln)
		if err != nil {
			return err
		}
	} else {
		target, err := net.ResolveUDPAddr("udp", rc.Target)
		if err != nil {
			return err
		}
		if done, err = e.send(target, func() { fmt.Println("READY") }); err != nil {
			return err
		}
	}
	line, _ := json.Marshal(done)
	fmt.Println("DONE " + string(line))
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
