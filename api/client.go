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

// TimeoutEnv names the environment variable that sets the CLI's request
// timeout, as a duration such as "30s".
const TimeoutEnv = "MESHWORK_HTTP_TIMEOUT"

// DefaultTimeout is how long a client waits for an agent's answer, unless
// WithTimeout says otherwise. A blocking read waits this long on top of
// the wait it asks for.
const DefaultTimeout = 30 * time.Second

// The agent's bounds on a blocking read (agent/httpapi uses them): the wait
// when the read gives none, and the most it grants. The agent adds up to
// 1/16 of the wait as jitter.
const (
	DefaultBlockingWait = 5 * time.Minute
	MaxBlockingWait     = 10 * time.Minute
)

// ErrUnreachable is returned when no connection to the agent could be made.
var ErrUnreachable = errors.New("cannot reach the agent")

// ErrTimeout is returned when the agent took the request but gave no answer
// within the client's timeout (WithTimeout): a hung or overloaded agent. A
// write that timed out after it was sent matches ErrOutcomeUnknown too.
var ErrTimeout = errors.New("the agent did not answer in time")

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
	// Code is the answer's machine-readable code, when it has one (the
	// policy API's, such as "cas_conflict" or "outcome_unknown").
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
	base    string
	hc      *http.Client
	token   string        // the ACL token's secret; "" sends none (anonymous)
	timeout time.Duration // per request, beside a blocking read's wait; 0 for none
}

// WithToken returns a client that sends secret, an ACL token's secret, in
// the X-Meshwork-Token header of every request. It shares c's connections.
// An empty secret sends none: the agent then applies the anonymous token.
func (c *Client) WithToken(secret string) *Client {
	cp := *c
	cp.token = secret
	return &cp
}

// WithTimeout returns a client that gives up on a request the agent has
// not answered within d: the whole answer for a read or a write, the
// headers for a stream (Stream). A blocking read (QueryOptions.Index) gets
// d on top of the wait it asks for. 0 waits as long as the agent takes.
// It shares c's connections.
func (c *Client) WithTimeout(d time.Duration) *Client {
	cp := *c
	cp.timeout = max(d, 0)
	return &cp
}

// Timeout is the client's request timeout; 0 for none.
func (c *Client) Timeout() time.Duration { return c.timeout }

// NewClient returns a client for the agent at addr ("host:port" or a URL),
// with DefaultTimeout. An empty addr means DefaultAddr.
func NewClient(addr string) *Client {
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{
		base:    strings.TrimRight(addr, "/"),
		timeout: DefaultTimeout,
		// No overall timeout here: each request gets its own deadline
		// (requestBudget), since blocking reads wait as long as they ask to.
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

// DoBody is Do for a request whose body is not JSON (a snapshot to
// restore): body is sent as is, with contentType.
func (c *Client) DoBody(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string, out any) (QueryMeta, error) {
	return c.send(ctx, method, path, query, "", body, contentType, out)
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, key string, in, out any) (QueryMeta, error) {
	if in == nil {
		return c.send(ctx, method, path, query, key, nil, "", out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return QueryMeta{}, fmt.Errorf("api: encode request: %w", err)
	}
	return c.send(ctx, method, path, query, key, bytes.NewReader(b), "application/json", out)
}

// requestBudget is how long a request may take before the client gives up
// on it: the timeout, and for a blocking read (index given) the wait the
// agent may hold it for. 0 means no limit.
func (c *Client) requestBudget(query url.Values) time.Duration {
	if c.timeout == 0 {
		return 0
	}
	if idx, _ := strconv.ParseUint(query.Get("index"), 10, 64); idx == 0 {
		return c.timeout
	}
	wait := DefaultBlockingWait
	if d, err := time.ParseDuration(query.Get("wait")); err == nil && d >= 0 {
		wait = d
	}
	wait = min(wait, MaxBlockingWait)
	return c.timeout + wait + wait/16
}

func (c *Client) send(ctx context.Context, method, path string, query url.Values, key string, body io.Reader, contentType string, out any) (QueryMeta, error) {
	var meta QueryMeta
	parent := ctx
	budget := c.requestBudget(query)
	if budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, budget)
		defer cancel()
	}
	// timedOut reports whether the client's own deadline, not the
	// caller's context, ended the request.
	timedOut := func() bool { return budget > 0 && ctx.Err() != nil && parent.Err() == nil }
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return meta, fmt.Errorf("api: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
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
		write := method != http.MethodGet && method != http.MethodHead
		switch {
		case wrote.Load() && write && timedOut():
			return meta, fmt.Errorf("%w: %w: the agent at %s gave no answer within %s after the request was sent", ErrOutcomeUnknown, ErrTimeout, c.base, budget)
		case wrote.Load() && write:
			return meta, fmt.Errorf("%w: the connection to the agent at %s failed after the request was sent: %s", ErrOutcomeUnknown, c.base, rootCause(err))
		case timedOut():
			return meta, c.timeoutError(method, path, budget)
		case parent.Err() != nil:
			return meta, parent.Err()
		}
		return meta, fmt.Errorf("%w at %s: %s", ErrUnreachable, c.base, rootCause(err))
	}
	defer resp.Body.Close()
	if idx := resp.Header.Get(IndexHeader); idx != "" {
		meta.Index, _ = strconv.ParseUint(idx, 10, 64)
	}
	meta.IdempotencyKey = resp.Header.Get(IdempotencyKeyHeader)
	if resp.StatusCode >= 300 {
		return meta, errorAnswer(resp, meta.IdempotencyKey)
	}
	if err := httpjson.ReadAnswer(resp.Body, out); err != nil {
		if timedOut() {
			return meta, c.timeoutError(method, path, budget)
		}
		return meta, fmt.Errorf("api: read answer of %s %s: %w", method, path, err)
	}
	return meta, nil
}

func (c *Client) timeoutError(method, path string, budget time.Duration) error {
	return fmt.Errorf("%w: %s %s: the agent at %s took the request but gave no answer within %s", ErrTimeout, method, path, c.base, budget)
}

// Stream sends a GET whose answer is a stream (the agent's log) and
// returns its body, which the caller must close; closing it, or ending
// ctx, ends the stream. The timeout bounds only the wait for the answer to
// begin. An error answer is an *Error, as with Do.
func (c *Client) Stream(ctx context.Context, path string, query url.Values) (io.ReadCloser, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("api: %w", err)
	}
	acl.SetToken(req.Header, c.token)
	var expired atomic.Bool
	var timer *time.Timer
	if c.timeout > 0 {
		timer = time.AfterFunc(c.timeout, func() { expired.Store(true); cancel() })
	}
	resp, err := c.hc.Do(req)
	if timer != nil {
		timer.Stop()
	}
	if err != nil {
		cancel()
		switch {
		case expired.Load() && parent.Err() == nil:
			return nil, c.timeoutError(http.MethodGet, path, c.timeout)
		case parent.Err() != nil:
			return nil, parent.Err()
		}
		return nil, fmt.Errorf("%w at %s: %s", ErrUnreachable, c.base, rootCause(err))
	}
	if resp.StatusCode >= 300 {
		defer cancel()
		defer resp.Body.Close()
		return nil, errorAnswer(resp, "")
	}
	return &streamBody{ReadCloser: resp.Body, cancel: cancel}, nil
}

// streamBody ends the request's context when the stream is closed.
type streamBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *streamBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// errorAnswer reads an error answer into an *Error. key is the
// idempotency key the answer's header gave, if any.
func errorAnswer(resp *http.Response, key string) error {
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
	return &Error{Status: resp.StatusCode, Message: eb.Error, Code: eb.Code, IdempotencyKey: cmp.Or(eb.IdempotencyKey, key)}
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
