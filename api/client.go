// Package api is the Go client of the agent's local HTTP API, and the JSON
// types that travel over it. The CLI is built on it; so can be any tool that
// talks to an agent.
package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// DefaultAddr is where the agent's HTTP API listens unless configured.
const DefaultAddr = "127.0.0.1:8500"

// AddrEnv names the environment variable that overrides DefaultAddr.
const AddrEnv = "MESHWORK_HTTP_ADDR"

// IndexHeader carries the catalog (or policy) index of a response, for
// blocking queries.
const IndexHeader = "X-Meshwork-Index"

// IdempotencyKeyHeader names a write (see DoKeyed): a write sent again
// with the same key is applied at most once, and answered with its first
// result.
const IdempotencyKeyHeader = "Idempotency-Key"

// ErrUnreachable is returned when no connection to the agent could be made.
var ErrUnreachable = errors.New("cannot reach the agent")

// ErrOutcomeUnknown matches the failure of a write that may or may not have
// been applied: the agent answered so (HTTP 503, code "outcome_unknown"),
// or the connection broke after the request left. Send it again with the
// same idempotency key to settle it without applying it twice.
var ErrOutcomeUnknown = errors.New("the write may or may not have been applied")

// CodeOutcomeUnknown is the code of an ErrOutcomeUnknown answer.
const CodeOutcomeUnknown = "outcome_unknown"

// Error is an error answer from the agent.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Message is the agent's one-line explanation.
	Message string
	// Code is the answer's machine-readable code, such as "not_found",
	// "permission_denied" or "outcome_unknown": every error answer of the
	// agent carries one (docs/api.md lists them). Branch on it, never on
	// Message. "" only when the answer was not the agent's JSON.
	Code string
	// IdempotencyKey is the key of the write the answer is about, if any.
	IdempotencyKey string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// Is makes an "outcome_unknown" answer match ErrOutcomeUnknown.
func (e *Error) Is(target error) bool {
	return target == ErrOutcomeUnknown && e.Code == CodeOutcomeUnknown
}

// Client talks to one agent. It is safe for concurrent use.
type Client struct {
	base  string
	hc    *http.Client
	token string // the ACL token's secret; "" sends none (anonymous)
}

// WithToken returns a client that sends secret, an ACL token's secret, in
// the X-Meshwork-Token header of every request. It shares c's connections.
// An empty secret sends none: the agent then applies the anonymous token.
func (c *Client) WithToken(secret string) *Client {
	cp := *c
	cp.token = secret
	return &cp
}

// NewClient returns a client for the agent at addr ("host:port" or a URL).
// An empty addr means $MESHWORK_HTTP_ADDR, or DefaultAddr.
func NewClient(addr string) *Client {
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{
		base: strings.TrimRight(addr, "/"),
		// No overall timeout: blocking queries wait as long as they ask to.
		hc: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 4,
		}},
	}
}

// Addr is the base URL of the agent this client talks to.
func (c *Client) Addr() string { return c.base }

// QueryMeta is what a response says about itself.
type QueryMeta struct {
	// Index is the value of the X-Meshwork-Index header, 0 when absent.
	Index uint64
	// IdempotencyKey is the key the agent used for a write, "" when none.
	IdempotencyKey string
}

// Do sends one request. in, when not nil, is sent as a JSON body; out, when not
// nil, receives the JSON answer. An error answer becomes an *Error; a failed
// connection wraps ErrUnreachable.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) (QueryMeta, error) {
	return c.do(ctx, method, path, query, "", in, out)
}

// DoKeyed is Do for a write under an idempotency key (Idempotency-Key; ""
// lets the agent choose one). Sent again with the same key, the write is
// applied at most once. A failure that may have left it applied matches
// ErrOutcomeUnknown, whether the agent said so or the connection broke
// after the request left.
func (c *Client) DoKeyed(ctx context.Context, method, path string, query url.Values, key string, in, out any) (QueryMeta, error) {
	return c.do(ctx, method, path, query, key, in, out)
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, key string, in, out any) (QueryMeta, error) {
	var meta QueryMeta
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return meta, fmt.Errorf("api: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return meta, fmt.Errorf("api: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set(IdempotencyKeyHeader, key)
	}
	acl.SetToken(req.Header, c.token)
	// A write whose request left may have been applied, whatever became of
	// the connection afterwards.
	var wrote atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }}))
	resp, err := c.hc.Do(req)
	if err != nil {
		if wrote.Load() && method != http.MethodGet && method != http.MethodHead {
			return meta, fmt.Errorf("%w: the connection to the agent at %s failed after the request was sent: %s", ErrOutcomeUnknown, c.base, rootCause(err))
		}
		if ctx.Err() != nil {
			return meta, ctx.Err()
		}
		return meta, fmt.Errorf("%w at %s: %s", ErrUnreachable, c.base, rootCause(err))
	}
	defer resp.Body.Close()
	if idx := resp.Header.Get(IndexHeader); idx != "" {
		meta.Index, _ = strconv.ParseUint(idx, 10, 64)
	}
	meta.IdempotencyKey = resp.Header.Get(IdempotencyKeyHeader)
	if resp.StatusCode >= 300 {
		var eb struct {
			Error          string `json:"error"`
			Code           string `json:"code"`
			IdempotencyKey string `json:"idempotency_key"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(raw, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(raw))
		}
		if eb.Error == "" {
			eb.Error = http.StatusText(resp.StatusCode)
		}
		return meta, &Error{Status: resp.StatusCode, Message: eb.Error, Code: eb.Code, IdempotencyKey: cmp.Or(eb.IdempotencyKey, meta.IdempotencyKey)}
	}
	if err := httpjson.ReadAnswer(resp.Body, out); err != nil {
		return meta, fmt.Errorf("api: read answer of %s %s: %w", method, path, err)
	}
	return meta, nil
}

// rootCause strips the layers of url.Error and net.OpError down to the
// system's own words, such as "connection refused".
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
