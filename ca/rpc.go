package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meshwork/meshwork/internal/httpjson"
)

// RPC endpoints a server mounts on its RPC port (raftstore's MountRPC,
// HTTP over TLS with ALPN RPCALPN). The TLS listener must request client
// certificates (tls.RequestClientCert or VerifyClientCertIfGiven) without
// requiring them: bootstrap requests come without one. The renew handler
// verifies the presented chain itself, against the current bundle.
const (
	RPCPathSign  = "/rpc/v1/ca/sign"
	RPCPathRenew = "/rpc/v1/ca/renew"
	RPCPathRoots = "/rpc/v1/ca/roots"
	// RPCPrefix is the prefix of every CA RPC path, for MountRPC.
	RPCPrefix = "/rpc/v1/ca/"
	// RPCALPN is the ALPN protocol of the servers' RPC port.
	RPCALPN = "meshwork-rpc/1"
)

// SignRequest is the body of RPCPathSign (with Token) and RPCPathRenew
// (without).
type SignRequest struct {
	// CSR is a PEM CERTIFICATE REQUEST.
	CSR string `json:"csr"`
	// Token is the bootstrap token; sign only.
	Token string `json:"token,omitempty"`
	// AgentToken is the secret of the agent's ACL token (acl.tokens.agent),
	// on both paths, for ServerDeps.AuthorizeToken. Left out when the agent
	// has none, so that servers of an earlier release, which refuse unknown
	// fields, still serve agents without ACLs.
	AgentToken string `json:"agent_token,omitempty"`
}

// maxAgentTokenLen bounds SignRequest.AgentToken before anything looks at
// it; a real secret is far shorter (acl.SecretLen).
const maxAgentTokenLen = 1 << 10

// SignResponse answers both.
type SignResponse struct {
	// Chain is PEM: the leaf, then its intermediates.
	Chain string `json:"chain"`
	// Bundle is the CA's current trust bundle.
	Bundle BundleJSON `json:"bundle"`
}

// RPCError is the error body of every CA RPC and API answer: the API's one
// error shape, httpjson.ErrorBody.
type RPCError = httpjson.ErrorBody

// Error codes of RPCError and their sentinels.
var errorCodes = []struct {
	code   string
	status int
	err    error
}{
	{httpjson.CodeNotReady, http.StatusServiceUnavailable, ErrNotReady},
	{"token_used", http.StatusUnauthorized, ErrTokenUsed},
	{"bad_token", http.StatusUnauthorized, ErrBadToken},
	{"trust_domain", http.StatusForbidden, ErrTrustDomain},
	{"unauthorized", http.StatusForbidden, ErrUnauthorized},
	{"bad_request", http.StatusBadRequest, ErrBadRequest},
	{httpjson.CodeRotationInProgress, http.StatusConflict, ErrRotationInProgress},
	{httpjson.CodeNotServer, http.StatusNotImplemented, ErrNotServer},
	{httpjson.CodeNoCertificate, http.StatusServiceUnavailable, ErrNoCertificate},
}

// writeError answers err with the status and code of its sentinel.
func writeError(w http.ResponseWriter, err error) {
	if errors.Is(err, httpjson.ErrBadBody) {
		err = fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			httpjson.CodedError(w, c.status, c.code, err)
			return
		}
	}
	httpjson.CodedError(w, http.StatusInternalServerError, httpjson.CodeInternal, err)
}

// remoteError turns an error answer back into an error wrapping the sentinel
// its code names.
func remoteError(op string, status int, body []byte) error {
	var e RPCError
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body))
		if len(e.Error) > 200 {
			e.Error = e.Error[:200]
		}
		if e.Error == "" {
			e.Error = http.StatusText(status)
		}
	}
	for _, c := range errorCodes {
		if e.Code == c.code {
			return fmt.Errorf("ca: %s: %w: server said: %s", op, c.err, e.Error)
		}
	}
	return fmt.Errorf("ca: %s: HTTP %d: %s", op, status, e.Error)
}

// RPCHandler returns the handler of the CA's RPC endpoints.
func (s *Server) RPCHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+RPCPathSign, s.handleSign)
	mux.HandleFunc("POST "+RPCPathRenew, s.handleRenew)
	mux.HandleFunc("GET "+RPCPathRoots, s.handleRoots)
	return mux
}

// DecodeSignRequest reads and checks a sign or renew body: JSON with known
// fields only, a PEM CSR whose signature holds, and (when wantToken) a token
// of sane size.
func DecodeSignRequest(body []byte, wantToken bool) (*x509.CertificateRequest, string, error) {
	var req SignRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, "", fmt.Errorf("%w: body: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return nil, "", fmt.Errorf("%w: body: trailing data after the JSON value", ErrBadRequest)
	}
	return checkSignRequest(&req, wantToken)
}

func checkSignRequest(req *SignRequest, wantToken bool) (*x509.CertificateRequest, string, error) {
	switch {
	case wantToken && req.Token == "":
		return nil, "", fmt.Errorf("%w: token is missing", ErrBadRequest)
	case !wantToken && req.Token != "":
		return nil, "", fmt.Errorf("%w: a renewal carries no token", ErrBadRequest)
	case len(req.Token) > 8<<10:
		return nil, "", fmt.Errorf("%w: token is %d bytes, at most 8 KiB", ErrBadRequest, len(req.Token))
	case len(req.AgentToken) > maxAgentTokenLen:
		return nil, "", fmt.Errorf("%w: agent_token is %d bytes, at most %d", ErrBadRequest, len(req.AgentToken), maxAgentTokenLen)
	case req.CSR == "":
		return nil, "", fmt.Errorf("%w: csr is missing", ErrBadRequest)
	}
	csr, err := ParseCSRPEM([]byte(req.CSR))
	if err != nil {
		return nil, "", err
	}
	return csr, req.Token, nil
}

func (s *Server) handleSign(w http.ResponseWriter, r *http.Request) {
	var req SignRequest
	if err := httpjson.Decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	csr, tok, err := checkSignRequest(&req, true)
	if err != nil {
		writeError(w, err)
		return
	}
	is, err := s.SignWithToken(r.Context(), tok, csr, req.AgentToken)
	s.answer(w, r, "sign", is, err)
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	var peer []*x509.Certificate
	if s.deps.PeerTLS != nil {
		if st, ok := s.deps.PeerTLS(r); ok {
			peer = st.PeerCertificates
		}
	} else if r.TLS != nil {
		peer = r.TLS.PeerCertificates
	}
	if len(peer) == 0 {
		writeError(w, fmt.Errorf("ca: renew: %w: present the current certificate over mTLS", ErrUnauthorized))
		return
	}
	var req SignRequest
	if err := httpjson.Decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	csr, _, err := checkSignRequest(&req, false)
	if err != nil {
		writeError(w, err)
		return
	}
	is, err := s.Renew(r.Context(), peer, csr, req.AgentToken)
	s.answer(w, r, "renew", is, err)
}

func (s *Server) answer(w http.ResponseWriter, r *http.Request, op string, is *Issued, err error) {
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Warn("ca request refused", "op", op, "remote", r.RemoteAddr, "err", err)
		}
		writeError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, SignResponse{
		Chain:  string(EncodeCertificatesPEM(is.Chain...)),
		Bundle: is.Bundle.JSON(),
	})
}

func (s *Server) handleRoots(w http.ResponseWriter, r *http.Request) {
	sg, err := s.signer()
	if err != nil {
		writeError(w, fmt.Errorf("ca: roots: %w", err))
		return
	}
	httpjson.Write(w, http.StatusOK, sg.bundle.JSON())
}

// LocalIssuer returns an Issuer that signs in process for this server's own
// node, without token or network: a server is trusted with the CA keys, so
// it needs no proof to get its own leaf. It waits until the CA is ready.
func (s *Server) LocalIssuer() Issuer { return localIssuer{s} }

type localIssuer struct{ s *Server }

func (l localIssuer) selfAuthorizing() bool { return true }

func (l localIssuer) Issue(ctx context.Context, req IssueRequest) (*Issued, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w: csr: %v", ErrBadRequest, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: sign: %w: csr signature: %v", ErrBadRequest, err)
	}
	return l.s.signLocal(ctx, csr)
}
