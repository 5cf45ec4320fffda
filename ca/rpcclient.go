package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"go.step.sm/crypto/jose"
)

// RPCClientConfig configures an RPCClient.
type RPCClientConfig struct {
	// TrustDomain is the mesh's trust domain; a server must present a leaf
	// of it. Required.
	TrustDomain string
	// Servers returns the RPC addresses (host:port) of the server agents, in
	// the order to try them. Required; called for every request.
	Servers func(ctx context.Context) ([]string, error)
	// Timeout bounds one request to one server. Default 10s.
	Timeout time.Duration
	// DialContext opens connections. Default: a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// ClientCertificate, when set, is presented when a request carries no
	// mesh leaf (bootstrap), for an RPC port that requires a client
	// certificate (raftstore's keytls leaf). Optional.
	ClientCertificate func() (*tls.Certificate, error)
	// TLS, when set, gives the client TLS config of the server port (for
	// raftstore: its keytls ClientConfig, which authenticates servers by the
	// cluster key and the trust added to it). It then decides whom to trust
	// instead of the bundle; the bootstrap token's root pin is still checked
	// against the roots the server serves. For a renewal the CA replaces its
	// client certificate with the current leaf: every call is a new
	// connection, so the renewal is always authenticated by the leaf it
	// renews. Optional.
	TLS func() *tls.Config

	// Do, when set, replaces the built-in transport (and Servers, Timeout,
	// DialContext, ClientCertificate): requests go through an RPC client
	// the agent already has, such as raftstore's. See RPCDoer.
	Do RPCDoer
}

// RPCDoer sends one request to some server's RPC port and returns the
// status and body of its answer, whatever the status; err is for requests
// that got no answer. An error answer's body is an RPCError ({"error",
// "code"}), which is also the shape of raftstore's RemoteError. The transport
// authenticates the server; for RPCPathRenew it must present the agent's
// current mesh leaf as its client certificate (raftstore: keytls
// SetCertificate with the Manager's leaf). It may block until ctx ends and is
// called concurrently.
type RPCDoer func(ctx context.Context, method, path string, body []byte) (status int, answer []byte, err error)

// RPCClient is the Issuer of client agents: it calls RPCPathSign (token) or
// RPCPathRenew (mTLS with the current certificate) on the servers, over TLS
// with ALPN RPCALPN. The server's certificate is verified against the
// agent's bundle, or at bootstrap against the root the token pins (its "sha"
// claim): the client fetches the roots, keeps only the pinned one, and
// verifies the server against it before sending the token. It is safe for
// concurrent use.
type RPCClient struct {
	cfg RPCClientConfig
}

// NewRPCClient validates cfg.
func NewRPCClient(cfg RPCClientConfig) (*RPCClient, error) {
	if err := ValidateTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("ca: rpc client: %w: TrustDomain: %v", ErrInvalidConfig, err)
	}
	if cfg.Servers == nil && cfg.Do == nil {
		return nil, fmt.Errorf("ca: rpc client: %w: Servers and Do are both nil", ErrInvalidConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.DialContext == nil {
		cfg.DialContext = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	return &RPCClient{cfg: cfg}, nil
}

// Issue implements Issuer. It tries the servers in order, moving on after a
// network error or a server that is not ready, and stops at a refusal.
func (c *RPCClient) Issue(ctx context.Context, req IssueRequest) (*Issued, error) {
	if req.Current == nil && req.Token == "" {
		return nil, fmt.Errorf("ca: issue: %w", ErrNoCredentials)
	}
	if c.cfg.Do != nil {
		return c.issueVia(ctx, req)
	}
	servers, err := c.cfg.Servers(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: issue: servers: %w", err)
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("ca: issue: %w: no server known", ErrNotReady)
	}
	var last error
	for _, addr := range servers {
		is, err := c.issueAt(ctx, addr, req)
		if err == nil {
			return is, nil
		}
		last = err
		if ctx.Err() != nil || !retryable(err) {
			return nil, err
		}
	}
	return nil, last
}

// retryable reports whether another server might answer differently.
func retryable(err error) bool {
	for _, final := range []error{ErrBadToken, ErrTokenUsed, ErrUnauthorized, ErrBadRequest, ErrTrustDomain} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}

func (c *RPCClient) issueAt(ctx context.Context, addr string, req IssueRequest) (*Issued, error) {
	bundle := req.Bundle
	path := RPCPathRenew
	if req.Current == nil {
		path = RPCPathSign
		if bundle == nil {
			pin, err := tokenRootPin(req.Token)
			if err != nil {
				return nil, fmt.Errorf("ca: issue: %w", err)
			}
			if bundle, err = c.pinnedRoots(ctx, addr, pin); err != nil {
				return nil, err
			}
		}
	}
	body, _ := json.Marshal(SignRequest{CSR: string(encodeCSRPEM(req.CSR)), Token: req.Token, AgentToken: req.AgentToken})
	var resp SignResponse
	if err := c.do(ctx, addr, http.MethodPost, path, body, c.tlsConfig(bundle, req.Current), &resp); err != nil {
		return nil, err
	}
	return c.issued(addr, &resp)
}

// issueVia sends the request through the agent's own RPC transport.
func (c *RPCClient) issueVia(ctx context.Context, req IssueRequest) (*Issued, error) {
	path := RPCPathRenew
	if req.Current == nil {
		path = RPCPathSign
	}
	body, _ := json.Marshal(SignRequest{CSR: string(encodeCSRPEM(req.CSR)), Token: req.Token, AgentToken: req.AgentToken})
	status, answer, err := c.cfg.Do(ctx, http.MethodPost, path, body)
	if err != nil {
		return nil, fmt.Errorf("ca: POST %s: %w", path, err)
	}
	if status != http.StatusOK {
		return nil, remoteError(path, status, answer)
	}
	var resp SignResponse
	if err := json.Unmarshal(answer, &resp); err != nil {
		return nil, fmt.Errorf("ca: POST %s: answer: %w", path, err)
	}
	return c.issued("the server", &resp)
}

// issued parses and checks a sign answer.
func (c *RPCClient) issued(from string, resp *SignResponse) (*Issued, error) {
	chain, err := ParseCertificatesPEM([]byte(resp.Chain))
	if err != nil {
		return nil, fmt.Errorf("ca: issue: answer of %s: chain: %w", from, err)
	}
	nb, err := resp.Bundle.Bundle()
	if err != nil {
		return nil, fmt.Errorf("ca: issue: answer of %s: %w", from, err)
	}
	if nb.TrustDomain != c.cfg.TrustDomain {
		return nil, fmt.Errorf("ca: issue: answer of %s: %w: bundle of %q", from, ErrTrustDomain, nb.TrustDomain)
	}
	return &Issued{Chain: chain, Bundle: nb}, nil
}

// tokenRootPin reads the root fingerprint a bootstrap token pins. The token
// is not verified here: the server does that; the pin only decides whom the
// agent trusts to send the token to.
func tokenRootPin(tok string) (string, error) {
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return "", fmt.Errorf("%w: not a signed JWT: %v", ErrBadToken, err)
	}
	var c tokenClaims
	if err := jwt.UnsafeClaimsWithoutVerification(&c); err != nil {
		return "", fmt.Errorf("%w: claims: %v", ErrBadToken, err)
	}
	if len(c.SHA) != 64 {
		return "", fmt.Errorf("%w: the token pins no root (claim \"sha\")", ErrBadToken)
	}
	return c.SHA, nil
}

// pinnedRoots fetches the roots from addr without trusting the connection,
// and keeps only the root whose fingerprint is pin.
func (c *RPCClient) pinnedRoots(ctx context.Context, addr, pin string) (*Bundle, error) {
	var bj BundleJSON
	insecure := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{RPCALPN}, InsecureSkipVerify: true} //nolint:gosec // only a root matching the pin is kept
	c.bootstrapCert(insecure)
	if c.cfg.TLS != nil {
		insecure = c.cfg.TLS()
	}
	if err := c.do(ctx, addr, http.MethodGet, RPCPathRoots, nil, insecure, &bj); err != nil {
		return nil, err
	}
	roots, err := ParseCertificatesPEM([]byte(bj.Roots))
	if err != nil {
		return nil, fmt.Errorf("ca: bootstrap: roots of %s: %w", addr, err)
	}
	for _, r := range roots {
		if Fingerprint(r) == pin {
			return (&Bundle{TrustDomain: c.cfg.TrustDomain, Roots: []*x509.Certificate{r}, ActiveRoot: pin}).init(), nil
		}
	}
	return nil, fmt.Errorf("ca: bootstrap: %w: %s does not serve the root the token pins (%s); the root may have been rotated since: make a new token", ErrBadToken, addr, pin)
}

// tlsConfig verifies the server against bundle (SPIFFE style: the chain and
// the trust domain, not a host name), or as RPCClientConfig.TLS does, and
// presents cur when set.
func (c *RPCClient) tlsConfig(bundle *Bundle, cur *tls.Certificate) *tls.Config {
	if c.cfg.TLS != nil {
		cfg := c.cfg.TLS().Clone()
		if cur != nil {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur, nil }
		}
		return cfg
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{RPCALPN},
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection checks the chain against the mesh bundle
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, _, err := bundle.verifyChain(cs.PeerCertificates, time.Now())
			return err
		},
	}
	if cur != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur, nil }
	} else {
		c.bootstrapCert(cfg)
	}
	return cfg
}

func (c *RPCClient) bootstrapCert(cfg *tls.Config) {
	if c.cfg.ClientCertificate != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.cfg.ClientCertificate() }
	}
}

// do sends one request to addr and decodes the JSON answer into out.
func (c *RPCClient) do(ctx context.Context, addr, method, path string, body []byte, tlsCfg *tls.Config, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: tlsCfg, DialContext: c.cfg.DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, rd)
	if err != nil {
		return fmt.Errorf("ca: %s %s: %w", method, path, err)
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: tr}).Do(hreq)
	if err != nil {
		return fmt.Errorf("ca: %s %s at %s: %w", method, path, addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("ca: %s %s at %s: %w", method, path, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return remoteError(path, resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("ca: %s %s at %s: answer: %w", method, path, addr, err)
	}
	return nil
}
