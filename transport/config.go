package transport

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/transport/balance"
	"github.com/meshwork/meshwork/transport/vip"
)

// DefaultPort is the UDP port of the QUIC listener.
const DefaultPort = 7948

// ALPN is the TLS application protocol of the tunnel. A new incompatible
// stream format gets a new ALPN as well as a new header version.
const ALPN = "meshwork/1"

// DefaultSocketBuffer is the UDP buffer size asked for: quic-go wants
// 7 MiB to sustain high rates without drops. The kernel caps what an
// unprivileged process gets at net.core.rmem_max and wmem_max; see Sysctls.
const DefaultSocketBuffer = 7 << 20

// Config configures a Transport. The zero value of each field selects the
// default named in its comment; Node and TrustDomain are required.
type Config struct {
	// Node is this agent's node name. Required.
	Node string
	// TrustDomain is the SPIFFE trust domain of the mesh. Required.
	TrustDomain string

	// VIPRange is where service virtual IPs are allocated. Default:
	// 127.240.0.0/12.
	VIPRange netip.Prefix
	// DisableVIPs turns off virtual IPs and their listeners (explicit
	// upstreams still work). Default: false.
	DisableVIPs bool

	// DefaultAllow decides inbound streams when no Authorizer is given:
	// true allows (as --dev does), false denies. Default: false (deny).
	DefaultAllow bool

	// IdleTimeout closes a proxied connection when neither direction has
	// moved a byte for this long. Default: 1h.
	IdleTimeout time.Duration
	// MaxStreamsPerPeer caps the concurrent inbound streams one peer node
	// may hold, over all its connections; more are refused as overloaded.
	// Each connection's QUIC stream credit is a little higher
	// (quicStreamCredit), so that the refusal, not a wait for credit, is
	// what a caller over the limit meets. Default: DefaultMaxStreamsPerPeer.
	MaxStreamsPerPeer int

	// ConnectAttempts bounds the instances tried for one outbound
	// connection: a failed connect tries another instance. Default: 3.
	ConnectAttempts int
	// ConnectTimeout bounds one whole outbound connect, all attempts
	// included; its remainder travels in the header as the deadline.
	// Default: 5s.
	ConnectTimeout time.Duration
	// AttemptTimeout bounds one attempt (peer dial and stream setup), so
	// that a dead instance leaves time for the next. Default: 2s.
	AttemptTimeout time.Duration
	// LocalDialTimeout bounds the receiver's dial of the local service.
	// Default: 2s.
	LocalDialTimeout time.Duration
	// HeaderTimeout bounds how long a receiver waits for a stream header.
	// Default: 10s.
	HeaderTimeout time.Duration

	// HandshakeTimeout is the QUIC handshake idle timeout. Default: 3s.
	HandshakeTimeout time.Duration
	// KeepAlive is the QUIC keep-alive period of peer connections.
	// Default: 10s.
	KeepAlive time.Duration
	// PeerIdleTimeout closes a peer connection that has heard nothing (not
	// even keep-alives) for this long; it detects dead peers. Default: 30s.
	PeerIdleTimeout time.Duration
	// DialBackoff is the first pause after a failed peer dial during which
	// new dials to that node fail at once; it doubles up to 30s and resets
	// on success. Default: 250ms.
	DialBackoff time.Duration
	// IdentityRecheck is how old a peer connection must be before a
	// caller that found the peer's certificate lacking a service's
	// identity dials the peer again, to pick up a renewed certificate (a
	// QUIC connection keeps the certificate of its handshake). It bounds
	// how long a newly registered instance waits, after its new leaf,
	// before it gets traffic, and makes a node that never gets the
	// identity cost one handshake per interval while it is asked for.
	// Default: 5s.
	IdentityRecheck time.Duration

	// SocketBuffer is the UDP receive and send buffer size asked for, in
	// bytes. Default: 7 MiB (DefaultSocketBuffer).
	SocketBuffer int
	// StreamWindow is the initial QUIC stream receive window. Default: 1 MiB.
	StreamWindow uint64
	// MaxStreamWindow is the largest a stream window may grow. Default: 16 MiB.
	MaxStreamWindow uint64
	// MaxConnWindow is the largest a connection window may grow. Default:
	// 64 MiB.
	MaxConnWindow uint64
	// CopyBuffer is the size of the buffer a direction of a proxied
	// connection uses while it moves bulk data (an interactive direction
	// uses 8 KiB). Larger buffers mean fewer syscalls per byte. Default:
	// 256 KiB.
	CopyBuffer int

	// StatelessResetKey lets a restarted agent reset its peers' stale
	// connections at once instead of leaving them to time out. Derive it
	// from a secret kept across restarts. Default: none.
	StatelessResetKey *[32]byte

	// ResyncInterval is how often listeners that failed to bind are tried
	// again. Default: 30s.
	ResyncInterval time.Duration

	// Balance tunes the instance picker. Default: balance defaults.
	Balance balance.Config
	// Seed fixes the random choices of balancing and splits (tests).
	// Default: 0, a random seed.
	Seed uint64

	// TraceSampleRate is the share, 0 to 1, of the traces this agent
	// starts (calls whose application sent no traceparent, and every L4
	// connection) that are sampled for export (telemetry.tracing.
	// sample_rate). Trace context is propagated either way. Default: 0.
	TraceSampleRate float64
}

// ErrConfig wraps every error of Validate.
var ErrConfig = errors.New("transport: invalid config")

func (c *Config) setDefaults() {
	if !c.VIPRange.IsValid() {
		c.VIPRange = vip.DefaultPrefix
	}
	setDur(&c.IdleTimeout, time.Hour)
	setInt(&c.MaxStreamsPerPeer, DefaultMaxStreamsPerPeer())
	setInt(&c.ConnectAttempts, 3)
	setDur(&c.ConnectTimeout, 5*time.Second)
	setDur(&c.AttemptTimeout, 2*time.Second)
	setDur(&c.LocalDialTimeout, 2*time.Second)
	setDur(&c.HeaderTimeout, 10*time.Second)
	setDur(&c.HandshakeTimeout, 3*time.Second)
	setDur(&c.KeepAlive, 10*time.Second)
	setDur(&c.PeerIdleTimeout, 30*time.Second)
	setDur(&c.DialBackoff, 250*time.Millisecond)
	setDur(&c.IdentityRecheck, 5*time.Second)
	setInt(&c.SocketBuffer, DefaultSocketBuffer)
	if c.StreamWindow == 0 {
		c.StreamWindow = 1 << 20
	}
	if c.MaxStreamWindow == 0 {
		c.MaxStreamWindow = 16 << 20
	}
	if c.MaxConnWindow == 0 {
		c.MaxConnWindow = 64 << 20
	}
	setInt(&c.CopyBuffer, 256<<10)
	setDur(&c.ResyncInterval, 30*time.Second)
}

func setDur(p *time.Duration, v time.Duration) {
	if *p == 0 {
		*p = v
	}
}

func setInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

// Validate fills in defaults and checks every field; its errors name the
// field and the value.
func (c *Config) Validate() error {
	c.setDefaults()
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: %s %v: %s", ErrConfig, field, v, why)
	}
	if c.Node == "" {
		return bad("Node", `""`, "required")
	}
	if c.TrustDomain == "" {
		return bad("TrustDomain", `""`, "required")
	}
	if _, err := vip.New(c.VIPRange); err != nil {
		return bad("VIPRange", c.VIPRange, err.Error())
	}
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"IdleTimeout", c.IdleTimeout}, {"ConnectTimeout", c.ConnectTimeout},
		{"AttemptTimeout", c.AttemptTimeout}, {"LocalDialTimeout", c.LocalDialTimeout},
		{"HeaderTimeout", c.HeaderTimeout}, {"HandshakeTimeout", c.HandshakeTimeout},
		{"KeepAlive", c.KeepAlive}, {"PeerIdleTimeout", c.PeerIdleTimeout},
		{"DialBackoff", c.DialBackoff}, {"IdentityRecheck", c.IdentityRecheck},
		{"ResyncInterval", c.ResyncInterval},
	}
	for _, d := range durations {
		if d.v < 0 {
			return bad(d.name, d.v, "must not be negative")
		}
	}
	if c.KeepAlive >= c.PeerIdleTimeout {
		return bad("KeepAlive", c.KeepAlive, fmt.Sprintf("must be shorter than PeerIdleTimeout (%s)", c.PeerIdleTimeout))
	}
	if err := CheckMaxStreamsPerPeer(c.MaxStreamsPerPeer); err != nil {
		return fmt.Errorf("%w: MaxStreamsPerPeer: %v", ErrConfig, err)
	}
	if c.ConnectAttempts < 1 || c.ConnectAttempts > 16 {
		return bad("ConnectAttempts", c.ConnectAttempts, "must be in 1..16")
	}
	if c.SocketBuffer < 64<<10 || c.SocketBuffer > 1<<30 {
		return bad("SocketBuffer", c.SocketBuffer, "must be in 64KiB..1GiB")
	}
	if c.CopyBuffer < 4<<10 || c.CopyBuffer > 16<<20 {
		return bad("CopyBuffer", c.CopyBuffer, "must be in 4KiB..16MiB")
	}
	if !(c.TraceSampleRate >= 0 && c.TraceSampleRate <= 1) {
		return bad("TraceSampleRate", c.TraceSampleRate, "must be in 0..1")
	}
	if c.StreamWindow > c.MaxStreamWindow {
		return bad("StreamWindow", c.StreamWindow, fmt.Sprintf("exceeds MaxStreamWindow %d", c.MaxStreamWindow))
	}
	if c.MaxStreamWindow > c.MaxConnWindow {
		return bad("MaxStreamWindow", c.MaxStreamWindow, fmt.Sprintf("exceeds MaxConnWindow %d", c.MaxConnWindow))
	}
	return nil
}

// Sysctls returns the kernel settings the tunnel's UDP socket needs to get
// the buffers cfg asks for without privileges. systemd (a sysctl.d drop-in)
// or Ansible should set them. As root the agent forces its buffers anyway
// (SO_RCVBUFFORCE), but the setting documents the need.
func Sysctls(cfg Config) map[string]string {
	size := cfg.SocketBuffer
	if size == 0 {
		size = DefaultSocketBuffer
	}
	v := fmt.Sprint(size)
	return map[string]string{"net.core.rmem_max": v, "net.core.wmem_max": v}
}

// quicStreamCredit is the QUIC stream credit of a peer's connection: the
// per-peer limit and some headroom. A peer at its limit then gets a
// prompt refusal from admission, whose status names the limit, rather
// than waiting for QUIC credit; the credit itself still bounds a peer
// that ignores refusals.
func quicStreamCredit(limit int) int64 {
	return int64(limit + max(64, limit/8))
}

// QUIC returns the quic-go configuration of the tunnel for a validated
// cfg. Benchmarks use it to measure raw quic-go with the same settings.
func (c Config) QUIC() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           c.HandshakeTimeout,
		MaxIdleTimeout:                 c.PeerIdleTimeout,
		KeepAlivePeriod:                c.KeepAlive,
		InitialStreamReceiveWindow:     c.StreamWindow,
		MaxStreamReceiveWindow:         c.MaxStreamWindow,
		InitialConnectionReceiveWindow: c.StreamWindow * 2,
		MaxConnectionReceiveWindow:     c.MaxConnWindow,
		MaxIncomingStreams:             quicStreamCredit(c.MaxStreamsPerPeer),
		MaxIncomingUniStreams:          -1,
	}
}
