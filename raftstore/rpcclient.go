package raftstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/internal/httpjson"
	"github.com/meshwork/meshwork/internal/keytls"
)

// HTTP headers of the RPC protocol.
const (
	// HeaderLeader carries the leader's node name in a 421 answer.
	HeaderLeader = "X-Meshwork-Leader"
	// HeaderIndex carries the index of an answer.
	HeaderIndex = "X-Meshwork-Index"
)

// CallOptions choose where an RPC goes.
type CallOptions struct {
	// Leader sends the call to the leader: the client starts with the last
	// leader it knew and follows redirects. Writes and consistent reads.
	Leader bool
	// Server sends the call to this "ip:port" only, with no retry.
	Server string
	// Stream returns as soon as the headers arrive; the body is the
	// caller's to read and close. Stream calls are not retried after that.
	Stream bool
}

// RPCClient calls the servers' RPC routes over the server port, with mutual
// TLS and ALPN meshwork-rpc/1. It picks a server from discovery, fails over
// to the next on connection errors, follows leader redirects, and waits out
// elections (ErrNoLeader) until the context's deadline. It is safe for
// concurrent use; every agent, server or client, has one.
type RPCClient struct {
	disc    Discovery
	hc      *http.Client
	tr      *http.Transport
	timeout time.Duration

	mu     sync.Mutex
	leader string // addr of the last known leader
	sticky string // addr of the last server that answered
}

// NewRPCClient returns a client that reaches the servers disc lists. dial
// opens TCP connections (nil: net.Dialer); timeout bounds a call whose
// context has no deadline (0: 15s).
func NewRPCClient(auth *keytls.Authority, disc Discovery, dial DialFunc, timeout time.Duration) *RPCClient {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	}
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	tlsCfg := auth.ClientConfig(ALPNRPC)
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialTLS(ctx, dial, addr, tlsCfg)
			if err != nil {
				return nil, &dialError{addr: addr, err: err}
			}
			return c, nil
		},
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &RPCClient{disc: disc, tr: tr, hc: &http.Client{Transport: tr}, timeout: timeout}
}

// dialError marks a failure to connect: the request never left, so any
// request may be retried on another server.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("dial %s: %v", e.addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// Close drops idle connections.
func (c *RPCClient) Close() { c.tr.CloseIdleConnections() }

// Leader is the address of the last leader this client learned.
func (c *RPCClient) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// candidates orders the servers to try: the preferred one first, then the
// other live servers shuffled, then the ones gossip thinks are down.
func (c *RPCClient) candidates(leader bool) []string {
	list, _ := c.disc.Watch()
	c.mu.Lock()
	pref := c.sticky
	if leader {
		pref = c.leader
	}
	c.mu.Unlock()
	var up, down []string
	for _, s := range list {
		if s.Addr == pref {
			continue
		}
		if s.Status.Reachable() {
			up = append(up, s.Addr)
		} else {
			down = append(down, s.Addr)
		}
	}
	rand.Shuffle(len(up), func(i, j int) { up[i], up[j] = up[j], up[i] })
	out := make([]string, 0, len(list)+1)
	if pref != "" {
		out = append(out, pref)
	}
	return append(append(out, up...), down...)
}

// addrOf resolves a leader's node name to its server address.
func (c *RPCClient) addrOf(id string) string {
	list, _ := c.disc.Watch()
	for _, s := range list {
		if s.ID == id {
			return s.Addr
		}
	}
	return ""
}

// Do sends one call and returns the response of a server that answered
// with success (status below 300). Error answers become *RemoteError (with
// the sentinel behind it), connection failures a wrapped error naming the
// server. The caller closes the body.
func (c *RPCClient) Do(ctx context.Context, method, path string, body []byte, opts CallOptions) (*http.Response, error) {
	if _, ok := ctx.Deadline(); !ok && !opts.Stream {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	idempotent := method == http.MethodGet || method == http.MethodHead
	var lastErr, noLeader error
	backoff := 25 * time.Millisecond
	for round := 0; ; round++ {
		var cands []string
		if opts.Server != "" {
			cands = []string{opts.Server}
		} else {
			cands = c.candidates(opts.Leader)
		}
		if len(cands) == 0 {
			lastErr = ErrNoServers
		}
		redirects := 0
		for i := 0; i < len(cands); i++ {
			addr := cands[i]
			resp, err := c.send(ctx, method, addr, path, body)
			if err != nil {
				lastErr = fmt.Errorf("server %s: %w", addr, err)
				var de *dialError
				if ctx.Err() != nil {
					if noLeader != nil {
						return nil, noLeader
					}
					return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
				}
				if !errors.As(err, &de) && !idempotent {
					// The request may have reached the server: do not
					// send it twice.
					return nil, lastErr
				}
				c.forget(addr)
				continue
			}
			if resp.StatusCode < 300 {
				c.remember(addr, opts.Leader)
				return resp, nil
			}
			rerr := readRemoteError(resp)
			resp.Body.Close()
			lastErr = fmt.Errorf("server %s: %w", addr, rerr)
			switch {
			case resp.StatusCode == http.StatusMisdirectedRequest:
				if leader := c.addrOf(resp.Header.Get(HeaderLeader)); leader != "" && redirects < 3 && opts.Server == "" {
					redirects++
					c.mu.Lock()
					c.leader = leader
					c.mu.Unlock()
					cands = append(cands[:i+1], append([]string{leader}, cands[i+1:]...)...)
				}
				continue
			case rerr.Code == "no_leader" && opts.Server == "":
				noLeader = lastErr
				continue // another server may know a leader; else wait below
			default:
				return nil, rerr
			}
		}
		if opts.Server != "" {
			return nil, lastErr
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if noLeader != nil {
				// Say why no write could be made, rather than which
				// unreachable server was tried last.
				return nil, noLeader
			}
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return nil, lastErr
		case <-t.C:
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func (c *RPCClient) send(ctx context.Context, method, addr, path string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.hc.Do(req)
}

func (c *RPCClient) remember(addr string, leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sticky = addr
	if leader {
		c.leader = addr
	}
}

func (c *RPCClient) forget(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sticky == addr {
		c.sticky = ""
	}
	if c.leader == addr {
		c.leader = ""
	}
}

func readRemoteError(resp *http.Response) *RemoteError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var re RemoteError
	if json.Unmarshal(b, &re) != nil || re.Message == "" {
		re.Message = strings.TrimSpace(string(b))
		if re.Message == "" {
			re.Message = http.StatusText(resp.StatusCode)
		}
	}
	if re.Code == "" {
		re.Code = "internal"
	}
	re.Status = resp.StatusCode
	return &re
}

// Exchange sends one call as Do does (failover, leader redirects, waiting
// out elections) and returns the final answer's status and body whatever
// the status; err is for calls no server answered. It suits callers that
// read error answers themselves, such as the CA's RPC client.
func (c *RPCClient) Exchange(ctx context.Context, method, path string, body []byte, opts CallOptions) (int, []byte, error) {
	resp, err := c.Do(ctx, method, path, body, opts)
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) && re.Status != 0 {
			b, _ := json.Marshal(re)
			return re.Status, b, nil
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

// CallJSON sends in (when not nil) as JSON and decodes the answer into out
// (when not nil). It returns the answer's index header, 0 when absent.
func (c *RPCClient) CallJSON(ctx context.Context, method, path string, in, out any, opts CallOptions) error {
	_, err := c.CallJSONIndex(ctx, method, path, in, out, opts)
	return err
}

// CallJSONIndex is CallJSON that also returns the X-Meshwork-Index header.
func (c *RPCClient) CallJSONIndex(ctx context.Context, method, path string, in, out any, opts CallOptions) (uint64, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, err
		}
	}
	resp, err := c.Do(ctx, method, path, body, opts)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var idx uint64
	fmt.Sscan(resp.Header.Get(HeaderIndex), &idx)
	if err := httpjson.ReadAnswer(resp.Body, out); err != nil {
		return idx, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	return idx, nil
}
