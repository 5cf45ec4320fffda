package transport

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/transport/balance"
	"github.com/meshwork/meshwork/transport/wire"
)

// errConnGone wraps a failed attempt whose QUIC connection died under it.
var errConnGone = errors.New("connection lost")

// RefusedError is the error of a connect the receiving agent refused.
// errors.Is(err, ErrRefused) holds for it.
type RefusedError struct {
	// Node is the receiving node.
	Node string
	// Code and Reason are the receiver's status frame.
	Code   wire.Code
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("transport: node %s refused: %s: %s", e.Node, e.Code, e.Reason)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// outListener is a TCP listener of outbound connections: a VIP port or an
// explicit upstream.
type outListener struct {
	kind    string // "vip" or "upstream"
	bind    string
	service string
	port    int    // destination port; 0 means each instance's main port
	source  string // claimed identity; "" means find it per connection
	ln      *net.TCPListener
	once    sync.Once
}

func (l *outListener) close() { l.once.Do(func() { l.ln.Close() }) }

func (l *outListener) same(o *outListener) bool {
	return l.kind == o.kind && strings.EqualFold(l.service, o.service) && l.port == o.port && l.source == o.source
}

func (t *Transport) watchCatalog() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.ResyncInterval)
	defer tick.Stop()
	for {
		snap, changed := t.deps.Catalog.Watch()
		t.reconcileCatalog(snap)
		select {
		case <-t.ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

func (t *Transport) watchLocal() {
	defer t.wg.Done()
	for {
		_, changed := t.deps.Local.Local()
		select {
		case <-t.ctx.Done():
			return
		case <-changed:
			t.reconcileLocal()
			t.reconcileCatalog(t.deps.Catalog.Current())
		}
	}
}

// reconcileCatalog follows a new snapshot: VIPs and their listeners, peers
// of nodes that left, balancer state of instances that left.
func (t *Transport) reconcileCatalog(snap *catalog.Snapshot) {
	t.reconcileMu.Lock()
	defer t.reconcileMu.Unlock()
	if t.ctx.Err() != nil {
		return
	}
	defer t.reconciled.Store(snap.Index())
	// Forget the balancer state of instances no longer passing, so that an
	// instance coming back starts afresh and nothing stale lingers.
	passing := map[epKey]bool{}
	for _, name := range snap.ServiceNames() {
		for _, inst := range snap.Passing(name, "") {
			passing[epKey{strings.ToLower(inst.Member.Node), inst.Service.ID}] = true
		}
	}
	t.eps.Retain(func(k epKey) bool { return passing[k] })
	t.skipLogged.Range(func(k, _ any) bool {
		if !passing[k.(epKey)] {
			t.skipLogged.Delete(k)
		}
		return true
	})
	// Nodes that gossip declared failed, or that are gone from the
	// catalog: close their connections now rather than at the QUIC idle
	// timeout. A node that left is draining (Drain): it takes no new
	// streams, but those in flight carry on until it closes the connection
	// itself.
	t.dropPeers(func(node string) bool {
		m, ok := snap.Member(node)
		return ok && (m.Status.Reachable() || m.Status == catalog.StatusLeft)
	})

	want := map[string]*outListener{}
	if !t.cfg.DisableVIPs {
		names := snap.ServiceNames()
		if _, _, err := t.vips.Sync(names); err != nil {
			t.log.Error("virtual IPs not allocated", "err", err)
		}
		localPorts := t.local.Load().allPorts()
		for _, name := range names {
			ip, ok := t.vips.VIP(name)
			if !ok {
				continue
			}
			for _, port := range servicePorts(snap.Instances(name)) {
				if localPorts[port] {
					// A local service may listen on 0.0.0.0:port, and a
					// listener on VIP:port would then fail to bind or,
					// worse, keep it from binding. Documented limitation.
					continue
				}
				bind := netip.AddrPortFrom(ip, uint16(port)).String()
				want[bind] = &outListener{kind: "vip", bind: bind, service: name, port: port}
			}
		}
	}
	t.syncListeners("vip", want)
}

// servicePorts is the union of the ports the instances declare, sorted.
func servicePorts(insts []catalog.Instance) []int {
	set := map[int]bool{}
	for _, in := range insts {
		for _, p := range in.Service.AllPorts() {
			if p > 0 && p < 65536 {
				set[p] = true
			}
		}
	}
	out := make([]int, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

func (ls *localState) allPorts() map[int]bool {
	out := map[int]bool{}
	for _, li := range ls.services {
		for p := range li.ports {
			out[p] = true
		}
	}
	return out
}

// reconcileLocal follows new local definitions: the uid map, the ports
// inbound streams may reach, and the explicit upstream listeners.
func (t *Transport) reconcileLocal() {
	t.reconcileMu.Lock()
	defer t.reconcileMu.Unlock()
	if t.ctx.Err() != nil {
		return
	}
	defs, _ := t.deps.Local.Local()
	t.local.Store(buildLocal(defs, t.log.Warn))
	want := map[string]*outListener{}
	for _, d := range defs {
		for _, u := range d.Upstreams {
			ap, err := netip.ParseAddrPort(u.LocalBind)
			if err != nil {
				t.log.Warn("upstream ignored: local_bind is not ip:port", "service", d.Name, "upstream", u.Service, "local_bind", u.LocalBind)
				continue
			}
			bind := ap.String()
			if prev, dup := want[bind]; dup {
				t.log.Warn("upstream ignored: local_bind already used", "service", d.Name, "upstream", u.Service, "local_bind", bind, "used_by", prev.source)
				continue
			}
			want[bind] = &outListener{kind: "upstream", bind: bind, service: u.Service, port: u.Port, source: spiffeid.Service(t.cfg.TrustDomain, d.Name)}
		}
	}
	t.syncListeners("upstream", want)
}

// syncListeners makes the listeners of kind exactly want: it closes the
// others and opens the missing ones. Existing connections are not touched.
// The caller holds reconcileMu, which Drain takes too.
func (t *Transport) syncListeners(kind string, want map[string]*outListener) {
	t.lnMu.Lock()
	defer t.lnMu.Unlock()
	for bind, l := range t.listeners {
		if l.kind != kind {
			continue
		}
		if w, ok := want[bind]; ok && w.same(l) {
			continue
		}
		l.close()
		delete(t.listeners, bind)
		t.m.listeners.WithLabelValues(kind).Dec()
		t.log.Debug("listener closed", "kind", kind, "addr", bind, "service", l.service)
	}
	if t.ctx.Err() != nil || t.draining.Load() {
		return // closing or draining: open nothing new
	}
	for bind, w := range want {
		if _, ok := t.listeners[bind]; ok {
			continue
		}
		ln, err := net.Listen("tcp", bind)
		if err != nil {
			t.m.listenErrors.WithLabelValues(kind).Inc()
			t.log.Warn("listener failed to bind; will retry", "kind", kind, "addr", bind, "service", w.service, "err", err)
			continue
		}
		w.ln = ln.(*net.TCPListener)
		t.listeners[bind] = w
		t.m.listeners.WithLabelValues(kind).Inc()
		t.log.Debug("listener open", "kind", kind, "addr", bind, "service", w.service)
		t.wg.Add(1)
		go t.serveListener(w)
	}
}

func (t *Transport) serveListener(l *outListener) {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || t.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accept failed", "addr", l.bind, "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		t.wg.Add(1)
		go t.handleOutbound(c, l)
	}
}

// handleOutbound carries one application connection through the mesh.
func (t *Transport) handleOutbound(c *net.TCPConn, l *outListener) {
	defer t.wg.Done()
	if !t.track(c) {
		return
	}
	defer t.untrack(c)
	t.flight.add()
	defer t.flight.done()
	start := time.Now()
	source := l.source
	if source == "" {
		source = t.sourceOf(c)
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.ConnectTimeout)
	s, done, err := t.connect(ctx, l.service, l.port, source)
	cancel()
	if err != nil {
		result := "failed"
		switch {
		case errors.Is(err, ErrNoInstance):
			result = "no_instance"
		case errors.Is(err, ErrRefused):
			result = "refused"
		}
		t.m.outbound.WithLabelValues(result).Inc()
		t.log.Info("outbound connection failed", "service", l.service, "port", l.port, "source", source, "err", err)
		c.SetLinger(0) // the application sees a reset, as from a refused port
		c.Close()
		return
	}
	t.m.connectSeconds.Observe(time.Since(start).Seconds())
	t.m.outOK.Inc()
	t.m.activeOut.Inc()
	up, down := t.splice(c, c, s)
	t.m.activeOut.Dec()
	done()
	t.m.bytesUp.Add(float64(up))
	t.m.bytesDown.Add(float64(down))
}

// sourceOf finds the identity of a VIP caller: the local service running
// as the caller's uid, else this node.
func (t *Transport) sourceOf(c *net.TCPConn) string {
	ls := t.local.Load()
	if len(ls.byUID) == 0 {
		return t.nodeID // nothing to map to: spare the netlink round trip
	}
	uid, err := t.deps.PeerUID(c)
	if err != nil {
		t.log.Debug("caller uid unknown; using the node identity", "remote", c.RemoteAddr().String(), "err", err)
		return t.nodeID
	}
	if svc, ok := ls.byUID[uid]; ok {
		return spiffeid.Service(t.cfg.TrustDomain, svc)
	}
	return t.nodeID
}

// subset is where a connection goes: a service, maybe narrowed by a split.
type subset struct {
	service string
	tags    []string
	meta    map[string]string
}

// firstTag is the tag the catalog indexes by; the others are filtered.
func (s subset) firstTag() string {
	if len(s.tags) == 0 {
		return ""
	}
	return s.tags[0]
}

// matches reports whether an instance belongs to the subset.
func (s subset) matches(svc *catalog.Service) bool {
	for _, tg := range s.tags {
		if !svc.HasTag(tg) {
			return false
		}
	}
	return metaMatches(svc, s.meta)
}

// route applies the traffic split of service, if any, drawing one subset
// by weight for this connection.
func (t *Transport) route(snap *catalog.Snapshot, service string) subset {
	if t.deps.Splits == nil {
		return subset{service: service}
	}
	targets := t.deps.Splits.SplitFor(service)
	if len(targets) == 0 {
		return subset{service: service}
	}
	var stack [8]uint32
	weights := stack[:0]
	for _, tg := range targets {
		w := tg.Weight
		// A subset with no healthy instance gets nothing: its share goes to
		// the others rather than failing connections.
		if w > 0 && !hasMatch(snap, subsetOf(service, tg)) {
			w = 0
		}
		weights = append(weights, w)
	}
	i := t.bal.Weighted(weights)
	if i < 0 {
		return subset{service: service}
	}
	return subsetOf(service, targets[i])
}

func subsetOf(service string, tg SplitTarget) subset {
	s := subset{service: tg.Service, tags: tg.Tags, meta: tg.Meta}
	if s.service == "" {
		s.service = service
	}
	return s
}

func hasMatch(snap *catalog.Snapshot, sub subset) bool {
	for _, in := range snap.Passing(sub.service, sub.firstTag()) {
		if sub.matches(in.Service) {
			return true
		}
	}
	return false
}

func metaMatches(svc *catalog.Service, want map[string]string) bool {
	for k, v := range want {
		if svc.Meta[k] != v {
			return false
		}
	}
	return true
}

// connect opens an accepted stream to an instance of service on port (0:
// each instance's main port), claiming source. It tries up to
// ConnectAttempts instances while ctx lasts; done must be called when the
// stream is finished with.
//
// An instance gets the connection only if it may serve its service: the
// IdentityPolicy lets its node hold the service's identity, and the
// certificate its agent presented on our connection to it holds that
// identity. Any other instance is skipped (logged and counted) without
// using up an attempt, and the balancer picks among the rest.
func (t *Transport) connect(ctx context.Context, service string, port int, source string) (s *quic.Stream, done func(), err error) {
	snap := t.deps.Catalog.Current()
	sub := t.route(snap, service)
	cands := snap.Passing(sub.service, sub.firstTag())
	if len(cands) == 0 {
		return nil, nil, fmt.Errorf("%w: %s", ErrNoInstance, sub.service)
	}
	portFor := func(in *catalog.Instance) int {
		switch {
		case port == 0:
			return in.Service.Port
		case in.Service.HasPort(port):
			return port
		case !strings.EqualFold(sub.service, service):
			// A split to another service keeps the connection but not
			// necessarily the port number: use that service's main port.
			return in.Service.Port
		}
		return 0
	}
	var tried []int
	skip := func(i int) bool {
		for _, x := range tried {
			if x == i {
				return true
			}
		}
		in := &cands[i]
		return in.Member.TunnelPort <= 0 || !in.Member.IP.IsValid() || portFor(in) == 0 || !sub.matches(in.Service)
	}
	hdr := wire.Header{Source: source, Trace: newTrace()}
	var lastErr, lastSkip error
	retriedGone := false
	for attempt := 0; attempt < t.cfg.ConnectAttempts; {
		if err := ctx.Err(); err != nil {
			if lastErr == nil {
				lastErr = err
			}
			break
		}
		i := t.bal.Pick(len(cands), func(i int) *balance.Endpoint {
			return t.eps.Get(keyOf(&cands[i]))
		}, skip)
		if i < 0 {
			break
		}
		in := &cands[i]
		if t.deps.IdentityPolicy != nil {
			if ok, why := t.deps.IdentityPolicy.MayHold(in.Member.Node, in.Service.Name); !ok {
				lastSkip = t.skipInstance(in, &skipError{reason: skipNodeNotAllowed, detail: why})
				tried = append(tried, i)
				continue
			}
		}
		ep := t.eps.Get(keyOf(in))
		hdr.Service = in.Service.Name
		hdr.Port = uint16(portFor(in))
		if dl, ok := ctx.Deadline(); ok {
			hdr.Timeout = max(time.Until(dl), time.Microsecond)
		}
		ep.Start()
		t0 := t.bal.Now()
		st, rel, err := t.openStream(ctx, in, &hdr)
		if err == nil {
			ep.Success(t.bal.Now() - t0)
			return st, func() { rel(); ep.End() }, nil
		}
		ep.End()
		if se, ok := errors.AsType[*skipError](err); ok {
			lastSkip = t.skipInstance(in, se)
			tried = append(tried, i)
			continue
		}
		attempt++
		lastErr = err
		var re *RefusedError
		if errors.As(err, &re) && !re.Code.Retryable() {
			t.m.attemptFailures.WithLabelValues(re.Code.String()).Inc()
			return nil, nil, err // policy and identity refusals are final
		}
		if errors.Is(err, errConnGone) && !retriedGone {
			// Not the instance's fault: try it again on a fresh connection.
			retriedGone = true
			t.m.attemptFailures.WithLabelValues("connection_lost").Inc()
			t.log.Debug("connection to peer lost; retrying on a new one", "node", in.Member.Node, "err", err)
			continue
		}
		ep.Failure()
		tried = append(tried, i)
		t.m.attemptFailures.WithLabelValues(failureReason(err)).Inc()
		t.log.Debug("connect attempt failed", "service", hdr.Service, "node", in.Member.Node, "attempt", attempt, "err", err)
	}
	switch {
	case lastErr != nil:
	case lastSkip != nil:
		lastErr = fmt.Errorf("%w: %s: no instance may serve it; last skipped: %w", ErrNoInstance, sub.service, lastSkip)
	default:
		lastErr = fmt.Errorf("%w: %s (none reachable on port %d)", ErrNoInstance, sub.service, port)
	}
	return nil, nil, lastErr
}

// Reasons an instance is skipped, the label of MetricSkipped.
const (
	// skipNoIdentity: the certificate the instance's agent presented does
	// not hold the service's identity.
	skipNoIdentity = "certificate_lacks_service"
	// skipNodeNotAllowed: the IdentityPolicy does not let the instance's
	// node hold the service's identity.
	skipNodeNotAllowed = "node_not_allowed"
)

// skipError is an instance passed over because it may not serve the
// service; connect tries another.
type skipError struct {
	reason string // skipNoIdentity or skipNodeNotAllowed
	detail string
}

func (e *skipError) Error() string { return e.reason + ": " + e.detail }

// skipLogEvery limits the log of skips to one line per instance per period:
// an instance that may not serve keeps being skipped for every connection.
const skipLogEvery = 30 * time.Second

// skipInstance counts and logs an instance that connect passed over, and
// returns the error for connect's answer.
func (t *Transport) skipInstance(in *catalog.Instance, se *skipError) error {
	t.m.skippedBy(se.reason).Inc()
	err := fmt.Errorf("instance %s on node %s: %w", in.Service.ID, in.Member.Node, se)
	k := keyOf(in)
	v, ok := t.skipLogged.Load(k)
	if !ok {
		v, _ = t.skipLogged.LoadOrStore(k, new(atomic.Int64))
	}
	last := v.(*atomic.Int64)
	now := time.Now().UnixNano()
	if prev := last.Load(); (prev == 0 || now-prev >= int64(skipLogEvery)) && last.CompareAndSwap(prev, now) {
		t.log.Warn("instance skipped: it may not serve the service", "service", in.Service.Name, "instance", in.Service.ID,
			"node", in.Member.Node, "reason", se.reason, "detail", se.detail)
	}
	return err
}

// connectionLevel reports whether err, from a stream, is the end of its
// whole QUIC connection rather than of the stream alone.
func connectionLevel(err error) bool {
	if _, ok := errors.AsType[*quic.StatelessResetError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return true
	}
	_, ok := errors.AsType[*quic.TransportError](err)
	return ok
}

func keyOf(in *catalog.Instance) epKey {
	return epKey{strings.ToLower(in.Member.Node), in.Service.ID}
}

func failureReason(err error) string {
	var re *RefusedError
	switch {
	case errors.As(err, &re):
		return re.Code.String()
	case errors.Is(err, ErrPeerUnreachable):
		return "peer_unreachable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "stream_error"
}

// newTrace starts a trace context for a connection, so that both agents'
// logs of it can be joined.
func newTrace() wire.TraceContext {
	var tc wire.TraceContext
	a, b, c := rand.Uint64(), rand.Uint64(), rand.Uint64()|1
	for i := range 8 {
		tc.TraceID[i] = byte(a >> (8 * i))
		tc.TraceID[8+i] = byte(b >> (8 * i))
		tc.ParentID[i] = byte(c >> (8 * i))
	}
	if tc.TraceID == [16]byte{} {
		tc.TraceID[15] = 1
	}
	return tc
}

// openStream opens a stream to the instance's agent, writes hdr and waits
// for the status. On success the caller owns the stream and calls release
// when done.
func (t *Transport) openStream(ctx context.Context, in *catalog.Instance, hdr *wire.Header) (*quic.Stream, func(), error) {
	actx, cancel := context.WithTimeout(ctx, t.cfg.AttemptTimeout)
	defer cancel()
	addr := netip.AddrPortFrom(in.Member.IP.Unmap(), uint16(in.Member.TunnelPort))
	p, err := t.peerFor(in.Member.Node, addr)
	if err != nil {
		return nil, nil, err
	}
	pc, err := p.acquire(actx)
	if err != nil {
		return nil, nil, err
	}
	if !pc.local.has(hdr.Source) {
		// The certificate presented on this connection predates the claim
		// (a service was added and the certificate reissued): move to a
		// fresh connection if the current certificate carries it.
		if cur, err := t.currentCert(); err == nil && cur.cert != pc.local.cert && cur.has(hdr.Source) {
			pc.release(p)
			p.broken(pc)
			if pc, err = p.acquire(actx); err != nil {
				return nil, nil, err
			}
		}
	}
	if !pc.holds(hdr.Service) {
		// Decided from the certificate of the connection's handshake, with
		// no new handshake. The peer may have been issued a certificate
		// that holds the identity since (a service just registered): a
		// connection old enough is replaced in the background, and a later
		// call sees the new certificate.
		pc.release(p)
		p.recheck(pc)
		held := "none"
		if len(pc.services) > 0 {
			held = strings.Join(pc.services, ", ")
		}
		return nil, nil, &skipError{reason: skipNoIdentity, detail: fmt.Sprintf("its agent's certificate holds no identity of service %s (services held: %s)", hdr.Service, held)}
	}
	release := func() { pc.release(p) }

	// connGone marks err as the loss of the whole QUIC connection (peer
	// restarted and reset it, idle timeout): the instance itself may be
	// fine, and a fresh connection is worth one more try. The cause, from
	// quic-go, is checked too: a closing connection fails its streams
	// before it cancels its context.
	connGone := func(cause, err error) error {
		if pc.conn.Context().Err() != nil || connectionLevel(cause) {
			p.broken(pc)
			return fmt.Errorf("%w: %w", errConnGone, err)
		}
		return err
	}
	s, err := pc.conn.OpenStreamSync(actx)
	if err != nil {
		release()
		return nil, nil, connGone(err, fmt.Errorf("%w: node %s: open stream: %v", ErrPeerUnreachable, in.Member.Node, err))
	}
	bp := smallPool.Get().(*[]byte)
	b, err := wire.AppendHeader((*bp)[:0], hdr)
	if err == nil {
		_, err = s.Write(b)
	}
	smallPool.Put(bp)
	if err != nil {
		s.CancelWrite(streamAborted)
		s.CancelRead(streamAborted)
		release()
		return nil, nil, connGone(err, fmt.Errorf("transport: node %s: write header: %w", in.Member.Node, err))
	}
	if dl, ok := actx.Deadline(); ok {
		s.SetReadDeadline(dl)
	}
	st, err := wire.ReadStatus(s)
	s.SetReadDeadline(time.Time{})
	if err != nil {
		s.CancelWrite(streamAborted)
		s.CancelRead(streamAborted)
		release()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// No answer in time: the peer may have restarted without our
			// knowing. The next caller dials afresh.
			p.broken(pc)
		}
		return nil, nil, connGone(err, fmt.Errorf("transport: node %s: read status: %w", in.Member.Node, err))
	}
	if !st.Accepted() {
		s.CancelWrite(streamRefused)
		s.CancelRead(streamRefused)
		release()
		return nil, nil, &RefusedError{Node: in.Member.Node, Code: st.Code, Reason: st.Reason}
	}
	return s, release, nil
}
