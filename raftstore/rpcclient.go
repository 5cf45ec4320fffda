package raftstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/catalog"
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
	// Retry lets the client send the call again after it may have reached
	// a server: a read, or a write that carries idempotency keys. Each
	// attempt then waits for its answer at most the attempt timeout (see
	// AttemptTimeout), and is abandoned as soon as the server it went to
	// stops being the leader (Raft on a server, gossip on a client agent);
	// the client then finds the new leader and tries again.
	Retry bool
}

// RPCClient calls the servers' RPC routes over the server port, with mutual
// TLS and ALPN meshwork-rpc/1. It picks a server from discovery, fails over
// to the next on connection errors, follows leader redirects, and waits out
// elections (ErrNoLeader) until the context's deadline. Calls made with
// CallOptions.Retry follow leadership (see there). It is safe for
// concurrent use; every agent, server or client, has one.
type RPCClient struct {
	disc    Discovery
	hc      *http.Client
	tr      *http.Transport
	timeout time.Duration

	// attemptTimeout bounds one attempt of a Retry call; holdOff is how
	// long redirects to a server that failed an attempt are not followed.
	// Both come from the Raft timers (SetTiming).
	attemptTimeout time.Duration
	holdOff        time.Duration
	// leaderView, on a server, is its Raft's view of the leader.
	leaderView func() leaderInfo

	mu     sync.Mutex
	leader string // addr of the last known leader
	sticky string // addr of the last server that answered
}

// leaderInfo is what a server's Raft says about the leader: its address
// ("" when none), since when that holds, and a channel closed at the next
// change.
type leaderInfo struct {
	addr    string
	since   time.Time
	changed <-chan struct{}
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
	c := &RPCClient{disc: disc, tr: tr, hc: &http.Client{Transport: tr}, timeout: timeout}
	c.SetTiming(LANTiming)
	return c
}

// AttemptTimeout is how long one attempt of a write or a consistent read
// waits for the leader's answer before the client looks for a new leader:
// the time followers need to replace a leader that went silent, two
// heartbeat timeouts (the randomised wait before an election) and an
// election timeout. With LANTiming that is 1.5 s, above the 0.6-1.5 s a
// failover takes, so that the retry finds the new leader, and far above a
// healthy commit (milliseconds). A retry is safe because writes carry
// idempotency keys; an attempt to a leader that timed out before is given
// twice as long, so a slow but live leader still answers.
func AttemptTimeout(t Timing) time.Duration {
	t = t.orDefault()
	return 2*t.HeartbeatTimeout + t.ElectionTimeout
}

// SetTiming derives the attempt timeout and the hold-off of Retry calls
// from the Raft timers. The hold-off, two heartbeat timeouts, is how long a
// server that failed an attempt is skipped and redirects to it are not
// followed: by then its followers have noticed a dead leader and stopped
// naming it. Call it before the first call.
func (c *RPCClient) SetTiming(t Timing) {
	t = t.orDefault()
	c.attemptTimeout = AttemptTimeout(t)
	c.holdOff = 2 * t.HeartbeatTimeout
}

// dialError marks a failure to connect: the request never left, so any
// request may be retried on another server.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("dial %s: %v", e.addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// Why an attempt was abandoned.
var (
	errAttemptTimeout = errors.New("no answer within the attempt timeout")
	errLeaderMoved    = errors.New("the leader changed while the call was in flight")
)

// Close drops idle connections.
func (c *RPCClient) Close() { c.tr.CloseIdleConnections() }

// Leader is the address of the last leader this client learned.
func (c *RPCClient) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// candidates orders the servers to try: the preferred one first (on a
// server asked for the leader, the leader its Raft follows), then the other
// live servers shuffled, then the ones gossip thinks are down. Servers held
// off (a failed attempt of this call) are left out, unless nothing else is
// left.
func (c *RPCClient) candidates(leader bool, held map[string]time.Time) []string {
	list, _ := c.disc.Watch()
	c.mu.Lock()
	pref := c.sticky
	if leader {
		pref = c.leader
	}
	c.mu.Unlock()
	if leader && c.leaderView != nil {
		if v := c.leaderView(); v.addr != "" {
			pref = v.addr
		}
	}
	now := time.Now()
	isHeld := func(addr string) bool { return now.Before(held[addr]) }
	var up, down, off []string
	for _, s := range list {
		switch {
		case s.Addr == pref:
		case isHeld(s.Addr):
			off = append(off, s.Addr)
		case s.Status.Reachable():
			up = append(up, s.Addr)
		default:
			down = append(down, s.Addr)
		}
	}
	rand.Shuffle(len(up), func(i, j int) { up[i], up[j] = up[j], up[i] })
	out := make([]string, 0, len(list)+1)
	if pref != "" && !isHeld(pref) {
		out = append(out, pref)
	} else if pref != "" {
		off = append(off, pref)
	}
	out = append(append(out, up...), down...)
	if len(out) == 0 {
		return off
	}
	return out
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

func statusOf(list []ServerInfo, addr string) catalog.MemberStatus {
	for _, s := range list {
		if s.Addr == addr {
			return s.Status
		}
	}
	return catalog.StatusLeft
}

// Do sends one call and returns the response of a server that answered
// with success (status below 300). Error answers become *RemoteError (with
// the sentinel behind it), connection failures a wrapped error naming the
// server. A write (any method but GET and HEAD) that may have reached a
// server and got no definite answer fails with ErrOutcomeUnknown. The
// caller closes the body; until then the call's own deadline (when ctx has
// none) still bounds reading it.
func (c *RPCClient) Do(ctx context.Context, method, path string, body []byte, opts CallOptions) (*http.Response, error) {
	cancelCall := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok && !opts.Stream {
		ctx, cancelCall = context.WithTimeout(ctx, c.timeout)
	}
	resp, release, err := c.do(ctx, method, path, body, opts)
	if err != nil {
		cancelCall()
		return nil, err
	}
	resp.Body = &releaseBody{ReadCloser: resp.Body, release: func() { release(); cancelCall() }}
	return resp, nil
}

// releaseBody ends the contexts of a call when its body is closed: the
// body is read under them.
type releaseBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// callState is what one call learned over its attempts.
type callState struct {
	write    bool
	lastErr  error // the last failure
	noLeader error // the last "no leader" answer
	// mismatch is the last server refused for its key
	// (keytls.ErrKeyMismatch): a call that then runs out of time says
	// so, rather than which attempt timed out last.
	mismatch error
	// maybe is the first failure after which a write may have been
	// applied: the request left and no definite answer came back.
	maybe error
}

// final is the error a call ends with when no attempt succeeded.
func (st *callState) final(ctx context.Context) error {
	err := st.lastErr
	if st.noLeader != nil {
		// Say why no write could be made, rather than which
		// unreachable server was tried last.
		err = st.noLeader
	} else if st.mismatch != nil {
		err = st.mismatch
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = ErrNoServers
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) && st.noLeader == nil {
		err = fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
	}
	if st.write && st.maybe != nil && !definite(err) {
		if err == st.maybe || errors.Is(err, ErrOutcomeUnknown) {
			return fmt.Errorf("%w: %v", ErrOutcomeUnknown, st.maybe)
		}
		return fmt.Errorf("%w: %v; then %v", ErrOutcomeUnknown, st.maybe, err)
	}
	return err
}

func (c *RPCClient) do(ctx context.Context, method, path string, body []byte, opts CallOptions) (*http.Response, func(), error) {
	st := &callState{write: method != http.MethodGet && method != http.MethodHead}
	retry := opts.Retry || !st.write
	var timeouts map[string]time.Duration // per server, for Retry calls
	if opts.Retry {
		timeouts = map[string]time.Duration{}
	}
	held := map[string]time.Time{}
	backoff := 25 * time.Millisecond
	for {
		var cands []string
		if opts.Server != "" {
			cands = []string{opts.Server}
		} else {
			cands = c.candidates(opts.Leader, held)
		}
		if len(cands) == 0 {
			st.lastErr = ErrNoServers
		}
		redirects := 0
		for i := 0; i < len(cands); i++ {
			if ctx.Err() != nil {
				return nil, nil, st.final(ctx)
			}
			addr := cands[i]
			var timeout time.Duration
			if opts.Retry {
				timeout = cmp.Or(timeouts[addr], c.attemptTimeout)
			}
			resp, release, sent, err := c.attempt(ctx, method, addr, path, body, timeout, opts.Leader && opts.Retry)
			if err != nil {
				st.lastErr = fmt.Errorf("server %s: %w", addr, err)
				if errors.Is(err, keytls.ErrKeyMismatch) {
					st.mismatch = st.lastErr
				}
				if sent && st.write && st.maybe == nil {
					st.maybe = st.lastErr
				}
				if ctx.Err() != nil {
					return nil, nil, st.final(ctx)
				}
				if sent && !retry {
					// The request may have reached the server: do not
					// send it twice.
					return nil, nil, st.final(ctx)
				}
				if errors.Is(err, errAttemptTimeout) {
					timeouts[addr] = 2 * timeout
				}
				c.forget(addr)
				if sent {
					held[addr] = time.Now().Add(c.holdOff)
				}
				continue
			}
			if resp.StatusCode < 300 {
				c.remember(addr, opts.Leader)
				return resp, release, nil
			}
			rerr := readRemoteError(resp)
			resp.Body.Close()
			release()
			st.lastErr = fmt.Errorf("server %s: %w", addr, rerr)
			switch {
			case resp.StatusCode == http.StatusMisdirectedRequest:
				leader := c.addrOf(resp.Header.Get(HeaderLeader))
				if leader == "" || redirects >= 3 || opts.Server != "" {
					continue
				}
				if time.Now().Before(held[leader]) {
					// It failed us a moment ago: its followers have
					// not noticed yet. Ask again after the backoff.
					st.noLeader = fmt.Errorf("%w (server %s names %s, which does not answer)", ErrNoLeader, addr, leader)
					continue
				}
				redirects++
				c.mu.Lock()
				c.leader = leader
				c.mu.Unlock()
				cands = append(cands[:i+1], append([]string{leader}, cands[i+1:]...)...)
				continue
			case (rerr.Code == "no_leader" || rerr.Code == "closed") && opts.Server == "":
				st.noLeader = st.lastErr
				continue // another server may know a leader; else wait below
			case rerr.Code == "lost_leader" && retry && opts.Server == "":
				// It lost its leadership with the write in flight: the
				// write may be applied; its key makes a retry safe.
				if st.maybe == nil {
					st.maybe = st.lastErr
				}
				c.forget(addr)
				continue
			default:
				if st.write && st.maybe != nil && !definite(rerr) {
					st.lastErr = rerr
					return nil, nil, st.final(ctx)
				}
				return nil, nil, rerr
			}
		}
		if opts.Server != "" {
			return nil, nil, st.final(ctx)
		}
		var view leaderInfo
		if opts.Leader && c.leaderView != nil {
			view = c.leaderView()
			// A server that has seen no leader for this long is cut off
			// from the others: give up rather than wait for the deadline.
			if view.addr == "" && !view.since.IsZero() && time.Since(view.since) >= 2*c.attemptTimeout {
				if st.noLeader == nil {
					st.noLeader = fmt.Errorf("%w (this server has seen no leader for %s)", ErrNoLeader, time.Since(view.since).Round(time.Millisecond))
				}
				return nil, nil, st.final(ctx)
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, st.final(ctx)
		case <-view.changed: // a new leader: ask at once
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// deadlineGrace is how long an attempt in flight when the call's deadline
// passes may still answer: a server that answers at once (no leader, a
// conflict) then gives a definite answer rather than an unknown outcome.
const deadlineGrace = 100 * time.Millisecond

// attempt sends the call to one server. timeout (when not 0) bounds the
// wait for the answer's headers; with watch, the attempt is abandoned when
// addr stops being the leader. sent reports whether the request may have
// reached the server. On success, release ends the attempt's context once
// the body is read.
func (c *RPCClient) attempt(ctx context.Context, method, addr, path string, body []byte, timeout time.Duration, watch bool) (resp *http.Response, release func(), sent bool, err error) {
	// The attempt ends when ctx is canceled, or deadlineGrace after its
	// deadline unless answered by then.
	actx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	var state atomic.Int32 // 0: waiting for the answer, 1: answered, 2: abandoned
	abandon := func(cause error) {
		if state.CompareAndSwap(0, 2) {
			cancel(cause)
		}
	}
	stopParent := context.AfterFunc(ctx, func() {
		cause := context.Cause(ctx)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			time.AfterFunc(deadlineGrace, func() { abandon(cause) })
			return
		}
		abandon(cause)
		cancel(cause) // answered: the caller no longer reads the body
	})
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() { abandon(fmt.Errorf("%w (%s)", errAttemptTimeout, timeout)) })
		defer t.Stop()
	}
	if watch {
		defer c.watchTarget(actx, addr, abandon)()
	}
	var wrote atomic.Bool
	tctx := httptrace.WithClientTrace(actx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	resp, err = c.send(tctx, method, addr, path, body)
	if err == nil && !state.CompareAndSwap(0, 1) {
		resp.Body.Close()
		err = errors.New("answer came too late")
	}
	if err != nil {
		if state.Load() == 2 {
			err = fmt.Errorf("%w: %v", context.Cause(actx), err)
		}
		stopParent()
		cancel(nil)
		return nil, nil, wrote.Load(), err
	}
	return resp, func() { stopParent(); cancel(nil) }, true, nil
}

// watchTarget abandons an attempt to addr when addr stops being the leader
// as far as this agent can tell: its Raft follows another leader (on a
// server), or gossip says addr is no longer alive. It returns a function
// that stops watching.
func (c *RPCClient) watchTarget(ctx context.Context, addr string, abandon func(error)) (stop func()) {
	done := make(chan struct{})
	go func() {
		var leaderCh <-chan struct{}
		if c.leaderView != nil {
			leaderCh = c.leaderView().changed
		}
		list, discCh := c.disc.Watch()
		was := statusOf(list, addr)
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-leaderCh:
				v := c.leaderView()
				if v.addr != addr {
					abandon(fmt.Errorf("%w: this server's Raft now follows %s", errLeaderMoved, cmp.Or(v.addr, "no leader")))
					return
				}
				leaderCh = v.changed
			case <-discCh:
				list, discCh = c.disc.Watch()
				now := statusOf(list, addr)
				if now != was && now != catalog.StatusAlive {
					abandon(fmt.Errorf("%w: gossip says server %s is %s", errLeaderMoved, addr, now))
					return
				}
				was = now
			}
		}
	}()
	return func() { close(done) }
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
	// A call made on an API request's behalf presents its token: a server
	// decides such calls from agents that are not servers again.
	if secret := acl.SecretFromContext(ctx); secret != "" {
		acl.SetToken(req.Header, secret)
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
		if method != http.MethodGet && method != http.MethodHead {
			// The server said yes to a write whose details were lost.
			return idx, fmt.Errorf("%w: read answer of %s %s: %v", ErrOutcomeUnknown, method, path, err)
		}
		return idx, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	return idx, nil
}
