// Package health runs the health checks of the services registered on this
// node: HTTP (2xx passes, 429 warns), TCP (a connection is accepted) and TTL
// (the service reports itself through the API; silence turns it critical).
//
// A Check only measures and reports. It tells its owner about every change
// of status through a callback, and when it has been critical for its
// deregister_critical_after; the owner (agent/local) aggregates the statuses
// into the node's gossiped record and removes services.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/clock"
)

// Errors of Check's methods.
var (
	// ErrNotTTL is returned by UpdateTTL on an HTTP or TCP check.
	ErrNotTTL = errors.New("not a ttl check")
	// ErrBadStatus is returned by UpdateTTL for a status that is not
	// passing, warning or critical.
	ErrBadStatus = errors.New("unknown check status")
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("check is closed")
)

// maxOutput bounds what a check keeps of a probe's answer or a TTL note.
const maxOutput = 4 << 10

// Update tells a check's owner that its status changed. It is a
// notification: by the time it is handled the check may have changed again,
// so owners read State for the current value.
type Update struct {
	CheckID string
	Status  catalog.Health
	Output  string
}

// State is a check's current status.
type State struct {
	Status catalog.Health
	// Output is the last probe's result or TTL note, at most 4 KiB.
	Output string
	// Since is when Status last changed.
	Since time.Time
}

// Deps are a check's collaborators. All are optional.
type Deps struct {
	// Clock drives intervals, TTLs and deregister_critical_after.
	// Default: clock.Real.
	Clock clock.Clock
	// OnChange is called after every change of status, in the goroutine that
	// made it (the probe loop, a timer, or the caller of UpdateTTL), without
	// any lock of the check held. Calls for one check may overlap. It must
	// not call Close on the check. Default: none.
	OnChange func(Update)
	// OnCriticalTimeout is called once the check has been critical for its
	// DeregisterCriticalAfter without a break. It is called at most once per
	// critical spell, from a timer goroutine, and must not call Close on the
	// check (start a goroutine for that). Default: none.
	OnCriticalTimeout func(checkID string)
	// Metrics records probes and changes. Default: none.
	Metrics *Metrics
	// Logger receives debug messages about status changes.
	// Default: discards.
	Logger *slog.Logger
}

// Check is one running health check. Its methods are safe for concurrent
// use.
type Check struct {
	def    api.CheckDefinition
	kind   string
	deps   Deps
	client *http.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the probe loop and timer callbacks in progress

	mu        sync.Mutex
	state     State
	started   bool
	closed    bool
	ttlTimer  clock.Timer
	ttlGen    uint64 // invalidates a ttl timer that was replaced
	critTimer clock.Timer
	critGen   uint64 // invalidates a critical timer that was stopped
}

// New validates def and returns a check that does nothing until Start. def
// must have been through api.ServiceDefinition.Normalize (it needs an ID).
func New(def api.CheckDefinition, deps Deps) (*Check, error) {
	if def.ID == "" {
		return nil, fmt.Errorf("health: new check: id is empty")
	}
	if err := def.Validate("check " + def.ID); err != nil {
		return nil, fmt.Errorf("health: new check: %w", err)
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	status := catalog.Health(def.Status)
	if status == "" {
		status = catalog.Critical
	}
	kind := def.Kind()
	if kind != api.CheckTTL {
		if def.Timeout == 0 {
			def.Timeout = api.Duration(api.DefaultCheckTimeout)
		}
		if def.Method == "" && kind == api.CheckHTTP {
			def.Method = http.MethodGet
		}
	}
	c := &Check{
		def:   def,
		kind:  kind,
		deps:  deps,
		state: State{Status: status, Since: deps.Clock.Now()},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if kind == api.CheckHTTP {
		c.client = &http.Client{Transport: &http.Transport{
			// Each probe is a fresh connection, as a new client's would be:
			// a kept-alive one would hide a listener that stopped accepting.
			DisableKeepAlives: true,
			// Probes go to the service itself, never through a proxy taken
			// from the environment.
			Proxy:       nil,
			DialContext: (&net.Dialer{}).DialContext,
		}}
	}
	return c, nil
}

// ID returns the check's ID.
func (c *Check) ID() string { return c.def.ID }

// Kind returns api.CheckHTTP, api.CheckTCP or api.CheckTTL.
func (c *Check) Kind() string { return c.kind }

// Definition returns the definition the check runs, with defaults filled in.
func (c *Check) Definition() api.CheckDefinition { return c.def }

// State returns the check's current status.
func (c *Check) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Resume sets the status of a check that has not started to the one its
// predecessor, the agent this one replaces, last published, so that a
// restart does not turn a passing service critical until its first probe
// ends (the first HTTP or TCP probe runs at Start and corrects it; a TTL
// check must be updated within its TTL as before). A check that started
// is left alone.
func (c *Check) Resume(status catalog.Health, output string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.closed || !status.Valid() {
		return
	}
	c.state = State{Status: status, Output: output, Since: c.deps.Clock.Now()}
}

// Start begins probing (HTTP, TCP; the first probe is immediate) or the TTL
// countdown. It returns at once; ctx is not retained.
func (c *Check) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("health: start %s: %w", c.def.ID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("health: start %s: %w", c.def.ID, ErrClosed)
	}
	if c.started {
		return fmt.Errorf("health: start %s: already started", c.def.ID)
	}
	c.started = true
	c.state.Since = c.deps.Clock.Now()
	if c.state.Status == catalog.Critical {
		c.armCritLocked()
	}
	if c.kind == api.CheckTTL {
		c.armTTLLocked()
		return nil
	}
	c.wg.Add(1)
	go c.loop()
	return nil
}

// Close stops the check and waits for its probe and timer callbacks to
// finish. It is idempotent. No callback starts after it returns.
func (c *Check) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.ttlTimer != nil {
		c.ttlTimer.Stop()
	}
	if c.critTimer != nil {
		c.critTimer.Stop()
	}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// UpdateTTL sets a TTL check's status and restarts its countdown. output is
// kept as the check's output (truncated to 4 KiB).
func (c *Check) UpdateTTL(status catalog.Health, output string) error {
	if c.kind != api.CheckTTL {
		return fmt.Errorf("health: update %s: %w", c.def.ID, ErrNotTTL)
	}
	if !status.Valid() {
		return fmt.Errorf("health: update %s: %w %q", c.def.ID, ErrBadStatus, status)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("health: update %s: %w", c.def.ID, ErrClosed)
	}
	u, changed := c.setLocked(status, output)
	if c.started {
		c.armTTLLocked()
	}
	c.mu.Unlock()
	c.notify(u, changed)
	return nil
}

// loop probes every Interval until Close.
func (c *Check) loop() {
	defer c.wg.Done()
	for {
		status, output := c.probe(c.ctx)
		if c.ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		u, changed := c.setLocked(status, output)
		c.mu.Unlock()
		c.notify(u, changed)

		next := make(chan struct{})
		t := c.deps.Clock.AfterFunc(c.def.Interval.D(), func() { close(next) })
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-next:
		}
	}
}

// probe runs one HTTP or TCP probe.
func (c *Check) probe(ctx context.Context) (catalog.Health, string) {
	ctx, cancel := context.WithTimeout(ctx, c.def.Timeout.D())
	defer cancel()
	start := time.Now()
	var status catalog.Health
	var output string
	if c.kind == api.CheckHTTP {
		status, output = c.probeHTTP(ctx)
	} else {
		status, output = c.probeTCP(ctx)
	}
	c.deps.Metrics.observeProbe(c.kind, status, time.Since(start))
	return status, output
}

func (c *Check) probeHTTP(ctx context.Context) (catalog.Health, string) {
	what := fmt.Sprintf("HTTP %s %s", c.def.Method, c.def.HTTP)
	req, err := http.NewRequestWithContext(ctx, c.def.Method, c.def.HTTP, nil)
	if err != nil {
		return catalog.Critical, fmt.Sprintf("%s: %v", what, err)
	}
	req.Header.Set("User-Agent", "Meshwork-Health-Check/1")
	for k, vs := range c.def.Header {
		if strings.EqualFold(k, "Host") && len(vs) > 0 {
			req.Host = vs[0]
			continue
		}
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && c.ctx.Err() == nil {
			return catalog.Critical, fmt.Sprintf("%s: timed out after %s", what, c.def.Timeout)
		}
		return catalog.Critical, fmt.Sprintf("%s: %s", what, rootCause(err))
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	output := fmt.Sprintf("%s: %s", what, resp.Status)
	if b := strings.TrimSpace(string(body)); b != "" {
		output += " Output: " + b
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return catalog.Passing, output
	case resp.StatusCode == http.StatusTooManyRequests:
		return catalog.Warning, output
	default:
		return catalog.Critical, output
	}
}

func (c *Check) probeTCP(ctx context.Context) (catalog.Health, string) {
	what := "TCP connect " + c.def.TCP
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.def.TCP)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && c.ctx.Err() == nil {
			return catalog.Critical, fmt.Sprintf("%s: timed out after %s", what, c.def.Timeout)
		}
		return catalog.Critical, fmt.Sprintf("%s: %s", what, rootCause(err))
	}
	conn.Close()
	return catalog.Passing, what + ": success"
}

// setLocked records a probe's result and reports whether the status
// changed. c.mu is held.
func (c *Check) setLocked(status catalog.Health, output string) (Update, bool) {
	if len(output) > maxOutput {
		output = output[:maxOutput]
	}
	c.state.Output = output
	if c.closed || status == c.state.Status {
		return Update{}, false
	}
	c.state.Status = status
	c.state.Since = c.deps.Clock.Now()
	if status == catalog.Critical {
		c.armCritLocked()
	} else {
		c.stopCritLocked()
	}
	return Update{CheckID: c.def.ID, Status: status, Output: output}, true
}

func (c *Check) notify(u Update, changed bool) {
	if !changed {
		return
	}
	c.deps.Metrics.observeChange(u.Status)
	c.deps.Logger.Debug("check status changed", "check", u.CheckID, "status", u.Status, "output", u.Output)
	if c.deps.OnChange != nil {
		c.deps.OnChange(u)
	}
}

// armTTLLocked (re)starts the TTL countdown. c.mu is held.
func (c *Check) armTTLLocked() {
	if c.ttlTimer != nil {
		c.ttlTimer.Stop()
	}
	c.ttlGen++
	gen := c.ttlGen
	c.ttlTimer = c.deps.Clock.AfterFunc(c.def.TTL.D(), func() { c.expireTTL(gen) })
}

func (c *Check) expireTTL(gen uint64) {
	c.mu.Lock()
	if c.closed || gen != c.ttlGen {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	defer c.wg.Done()
	u, changed := c.setLocked(catalog.Critical, fmt.Sprintf("TTL of %s expired", c.def.TTL))
	c.mu.Unlock()
	c.notify(u, changed)
}

// armCritLocked starts counting towards DeregisterCriticalAfter.
func (c *Check) armCritLocked() {
	if c.def.DeregisterCriticalAfter == 0 || c.deps.OnCriticalTimeout == nil {
		return
	}
	c.stopCritLocked()
	gen := c.critGen
	c.critTimer = c.deps.Clock.AfterFunc(c.def.DeregisterCriticalAfter.D(), func() { c.critFired(gen) })
}

func (c *Check) stopCritLocked() {
	if c.critTimer != nil {
		c.critTimer.Stop()
		c.critTimer = nil
	}
	c.critGen++
}

func (c *Check) critFired(gen uint64) {
	c.mu.Lock()
	if c.closed || gen != c.critGen || c.state.Status != catalog.Critical {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	defer c.wg.Done()
	c.mu.Unlock()
	c.deps.Logger.Debug("check critical for too long", "check", c.def.ID, "deregister_critical_after", c.def.DeregisterCriticalAfter.String())
	c.deps.OnCriticalTimeout(c.def.ID)
}

// rootCause strips url.Error and net.OpError layers down to the system's
// words, such as "connection refused".
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
