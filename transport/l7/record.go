package l7

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/meshwork/meshwork/transport/observe"
)

// The record of each request (observe.Call) is filled in as the request
// goes: the head's fields when it is read, the route and instance when a
// try succeeds, the status and bytes as the answer is written. Begin and
// End are called once each, with nothing held after End.

// beginRecord stamps and hands the start of a request's record to the
// observer.
func (p *Proxy) beginRecord(o *observe.Call) {
	if p.deps.Observer != nil {
		p.deps.Observer.Begin(o)
	}
}

// endRecord stamps and hands the end of a request's record to the
// observer.
func (p *Proxy) endRecord(o *observe.Call) {
	o.Duration = time.Since(o.Start)
	if p.deps.Observer != nil {
		p.deps.Observer.End(o)
	}
}

// describeRequest records the fields of a request's head.
func describeRequest(o *observe.Call, r *http.Request) {
	o.Method, o.Authority, o.Path = r.Method, r.Host, r.URL.Path
	if v := r.Header["User-Agent"]; len(v) > 0 {
		o.UserAgent = v[0]
	}
	if v := r.Header["X-Request-Id"]; len(v) > 0 {
		o.RequestID = v[0]
	}
}

// protocolOf is the record's protocol of a request.
func protocolOf(grpc bool) observe.Protocol {
	if grpc {
		return observe.GRPC
	}
	return observe.HTTP
}

// recordMeshError records an answer of the mesh's own.
func recordMeshError(o *observe.Call, me *meshError, grpc bool) {
	o.MeshError = me.reason
	if grpc {
		o.Status, o.GRPCStatus = http.StatusOK, me.grpcCode()
		return
	}
	o.Status = me.status
}

// grpcStatusOf reads the grpc-status of an answer: from its trailers once
// its body is read, else from its head (a trailers-only answer); -1 when
// it has none.
func grpcStatusOf(resp *http.Response) int {
	if v := resp.Trailer["Grpc-Status"]; len(v) > 0 {
		return parseGRPCStatus(v[0])
	}
	if v := resp.Header["Grpc-Status"]; len(v) > 0 {
		return parseGRPCStatus(v[0])
	}
	return -1
}

// parseGRPCStatus parses a grpc-status value, a number of at most 3
// digits; -1 when it is not one.
func parseGRPCStatus(s string) int {
	if len(s) == 0 || len(s) > 3 {
		return -1
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return -1
		}
		n = n*10 + int(s[i]-'0')
	}
	return n
}

// reasons are the values of ErrorHeader this version knows.
var reasons = [...]string{ReasonNoInstance, ReasonTimeout, ReasonDeadlineExceeded, ReasonDenied,
	ReasonConnectFailed, ReasonUpstreamReset, ReasonBadRequest, ReasonFaultInjected, ReasonCircuitOpen}

// knownReason returns the Reason constant v spells, or "other": the
// header reaches records from the answer, which an app could write too,
// and the records' reasons must stay a small set.
func knownReason(v []byte) string {
	for _, r := range reasons {
		if string(v) == r {
			return r
		}
	}
	return "other"
}

// meshErrorHead is how the receiving agent writes ErrorHeader in the head
// of its own answers (net/http writes canonical keys as given).
var meshErrorHead = []byte("\r\n" + ErrorHeader + ": ")

// meshErrorIn finds ErrorHeader's value in the head of an answer br holds
// buffered, without reading it; "" when the head (as far as it is
// buffered) has none. Only answers with an error status are looked at.
func meshErrorIn(br *bufio.Reader) string {
	head, _ := br.Peek(br.Buffered())
	if end := bytes.Index(head, []byte("\r\n\r\n")); end >= 0 {
		head = head[:end+2]
	}
	i := bytes.Index(head, meshErrorHead)
	if i < 0 {
		return ""
	}
	v := head[i+len(meshErrorHead):]
	if j := bytes.IndexByte(v, '\r'); j >= 0 {
		return knownReason(v[:j])
	}
	return ""
}

// inboundRecord is what the record of an inbound request needs, pooled:
// the record.
type inboundRecord struct {
	call observe.Call
}

// recordNames keeps the names records give a node's local services and
// instances, which are few, so that a request's record costs no
// allocation for them. Typed maps: a sync.Map would box each key.
type recordNames struct {
	mu    sync.RWMutex
	ids   map[string]string         // service -> SPIFFE ID
	addrs map[netip.AddrPort]string // address -> "ip:port"
}

// serviceID is the SPIFFE ID of a local service, for records; "" without
// a trust domain.
func (p *Proxy) serviceID(svc string) string {
	if p.cfg.TrustDomain == "" {
		return ""
	}
	n := &p.names
	n.mu.RLock()
	id, ok := n.ids[svc]
	n.mu.RUnlock()
	if !ok {
		id = spiffeid.Service(p.cfg.TrustDomain, svc)
		n.mu.Lock()
		n.ids[svc] = id
		n.mu.Unlock()
	}
	return id
}

// addrName is a local address as records name the instance.
func (p *Proxy) addrName(a netip.AddrPort) string {
	n := &p.names
	n.mu.RLock()
	s, ok := n.addrs[a]
	n.mu.RUnlock()
	if !ok {
		s = a.String()
		n.mu.Lock()
		n.addrs[a] = s
		n.mu.Unlock()
	}
	return s
}
