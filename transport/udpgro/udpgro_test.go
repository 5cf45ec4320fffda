//go:build linux

package udpgro

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wrapped(t *testing.T) *Conn {
	t.Helper()
	pc, ok := Wrap(listen(t))
	if !ok {
		t.Fatal("UDP_GRO refused on loopback")
	}
	return pc.(*Conn)
}

// msgWriter is a plain socket or a wrapped one.
type msgWriter interface {
	WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error)
}

// sendRun sends payload to dst in one sendmsg, cut by the kernel into
// segments of seg bytes (UDP_SEGMENT), as quic-go sends with GSO.
func sendRun(t *testing.T, from msgWriter, dst net.Addr, payload []byte, seg uint16) {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], seg)
	if _, _, err := from.WriteMsgUDP(payload, oob, dst.(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
}

// pattern is n bytes where byte i of segment k is k*31+i, so that a
// segment out of place or cut wrongly shows.
func pattern(n, seg int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((i/seg)*31 + i%seg)
	}
	return b
}

func messages(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

// readAll reads until want datagrams came, at most 8 per call.
func readAll(t *testing.T, c *Conn, want, size int) [][]byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got [][]byte
	for len(got) < want {
		ms := messages(8, size)
		n, err := c.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), want, err)
		}
		for _, m := range ms[:n] {
			got = append(got, m.Buffers[0][:m.N])
		}
	}
	return got
}

func TestSplitsACoalescedRun(t *testing.T) {
	rx, tx := wrapped(t), listen(t)
	const seg = 1000
	payload := pattern(4*seg+500, seg)
	sendRun(t, tx, rx.LocalAddr(), payload, seg)

	got := readAll(t, rx, 5, 1452)
	if len(got) != 5 {
		t.Fatalf("got %d datagrams, want 5", len(got))
	}
	for i, d := range got {
		want := payload[i*seg : min((i+1)*seg, len(payload))]
		if !bytes.Equal(d, want) {
			t.Fatalf("datagram %d: %d bytes %x..., want %d bytes %x...", i, len(d), d[:4], len(want), want[:4])
		}
	}
	if rx.reads.Load() != 1 || rx.datagrams.Load() != 5 {
		t.Fatalf("socket gave %d messages for %d datagrams; want the run coalesced into 1", rx.reads.Load(), rx.datagrams.Load())
	}
}

func TestHandsOutAcrossCalls(t *testing.T) {
	rx, tx := wrapped(t), listen(t)
	const seg = 100
	payload := pattern(20*seg, seg)
	sendRun(t, tx, rx.LocalAddr(), payload, seg)

	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	for calls := 1; len(got) < len(payload); calls++ {
		ms := messages(3, 1452)
		n, err := rx.ReadBatch(ms, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n != 3 && len(got)+n*seg != len(payload) {
			t.Fatalf("call %d handed out %d datagrams with more pending", calls, n)
		}
		for _, m := range ms[:n] {
			if m.N != seg || m.Addr.String() != tx.LocalAddr().String() {
				t.Fatalf("call %d: datagram of %d bytes from %v", calls, m.N, m.Addr)
			}
			got = append(got, m.Buffers[0][:m.N]...)
		}
	}
	if !bytes.Equal(got, payload) || rx.reads.Load() != 1 {
		t.Fatalf("got %d bytes in %d socket messages, want %d in 1", len(got), rx.reads.Load(), len(payload))
	}
}

func TestSingleAndEmptyDatagrams(t *testing.T) {
	rx, tx := wrapped(t), listen(t)
	for _, p := range [][]byte{[]byte("one"), {}, []byte("three")} {
		if _, err := tx.WriteTo(p, rx.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, rx, 3, 1452)
	if len(got) != 3 || string(got[0]) != "one" || len(got[1]) != 0 || string(got[2]) != "three" {
		t.Fatalf("got %q", got)
	}
}

func TestCutsDatagramsLongerThanTheBuffer(t *testing.T) {
	rx, tx := wrapped(t), listen(t)
	payload := pattern(3*600, 600)
	sendRun(t, tx, rx.LocalAddr(), payload, 600)
	got := readAll(t, rx, 3, 500)
	for i, d := range got {
		if !bytes.Equal(d, payload[i*600:i*600+500]) {
			t.Fatalf("datagram %d: %d bytes, want the first 500 of segment %d", i, len(d), i)
		}
	}
}

// TestKeepsOtherControlMessages: the ECN bits (IP_TOS) of a run apply to
// each of its datagrams; the UDP_GRO message is consumed.
func TestKeepsOtherControlMessages(t *testing.T) {
	rx, tx := wrapped(t), listen(t)
	setInt := func(c *net.UDPConn, level, opt, v int) {
		raw, _ := c.SyscallConn()
		var serr error
		if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
	}
	setInt(rx.UDPConn, unix.IPPROTO_IP, unix.IP_RECVTOS, 1)
	setInt(tx, unix.IPPROTO_IP, unix.IP_TOS, 0x02) // ECT(0)
	sendRun(t, tx, rx.LocalAddr(), pattern(3*200, 200), 200)

	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	ms := messages(8, 1452)
	n, err := rx.ReadBatch(ms, 0)
	if err != nil || n != 3 {
		t.Fatalf("ReadBatch: %d datagrams, %v; want 3", n, err)
	}
	for i, m := range ms[:n] {
		var tos, gro bool
		oob := m.OOB[:m.NN]
		for len(oob) > 0 {
			h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
			if err != nil {
				t.Fatalf("datagram %d: control messages: %v", i, err)
			}
			tos = tos || (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(body) == 1 && body[0]&3 == 2)
			gro = gro || (h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO)
			oob = rest
		}
		if !tos || gro {
			t.Fatalf("datagram %d: ECT(0) present %v, UDP_GRO present %v; want true, false", i, tos, gro)
		}
	}
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	var pc net.PacketConn = struct{ net.PacketConn }{listen(t)}
	if got, ok := Wrap(pc); ok || got != pc {
		t.Fatalf("Wrap of a non-UDPConn = %T, %v; want it back unchanged", got, ok)
	}
}

// TestQUICStreamOverGRO moves 32 MiB over one quic-go stream between two
// wrapped sockets: quic-go must read through ReadBatch, and every byte
// must arrive intact and in order.
func TestQUICStreamOverGRO(t *testing.T) {
	srv, cli := wrapped(t), wrapped(t)
	serverTLS, clientTLS := tlsPair(t)
	st, ct := &quic.Transport{Conn: srv}, &quic.Transport{Conn: cli}
	defer st.Close()
	defer ct.Close()
	ln, err := st.Listen(serverTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			done <- result{err: err}
			return
		}
		s, err := c.AcceptStream(ctx)
		if err != nil {
			done <- result{err: err}
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, s)
		done <- result{sum: [32]byte(h.Sum(nil)), n: n, err: err}
	}()

	c, err := ct.Dial(ctx, srv.LocalAddr(), clientTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const total = 32 << 20
	h := sha256.New()
	chunk := make([]byte, 64<<10)
	for sent := 0; sent < total; sent += len(chunk) {
		rand.Read(chunk)
		h.Write(chunk)
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	r := <-done
	if r.err != nil || r.n != total || r.sum != [32]byte(h.Sum(nil)) {
		t.Fatalf("received %d bytes (err %v), checksum match %v; want %d intact", r.n, r.err, r.sum == [32]byte(h.Sum(nil)), total)
	}
	datagrams, reads := srv.datagrams.Load(), srv.reads.Load()
	if datagrams <= reads {
		t.Fatalf("the receiver got %d datagrams in %d socket messages: nothing was coalesced", datagrams, reads)
	}
	t.Logf("receiver: %d datagrams in %d socket messages", datagrams, reads)
}

func tlsPair(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"udpgro-test"}},
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"udpgro-test"}}
}
