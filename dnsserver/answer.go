package dnsserver

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/meshwork/meshwork/catalog"
)

// action is what the transport does with the result of respond.
type action int

const (
	actDrop    action = iota // send nothing
	actReply                 // send the response
	actForward               // not our zone: ask the recursors
)

// scratch is the per-goroutine memory of the query path, reused from one
// query to the next so that answering allocates nothing.
type scratch struct {
	q query
	w wmsg
	// in holds a query read from TCP or packed by ServeDNS.
	in []byte
	// out holds the response after a 2-byte prefix, so that TCP can send
	// length and message in one write.
	out     []byte
	perm    []int32
	targets []target
	ports   []uint16

	// Outcome of the last respond, for metrics and forwarding.
	rcode   int
	maxSize int
}

// target is one SRV target whose address goes in the additional section.
type target struct {
	m    *catalog.Member // node target; nil for an addr or VIP target
	ip   netip.Addr
	name string // service name for a VIP target
	off  int    // offset of the target name in the message; -1 if not reachable
}

func newScratch() *scratch {
	sc := &scratch{out: make([]byte, 2+65535+outSlack), in: make([]byte, 2+65535)}
	sc.w.b = sc.out[2:]
	return sc
}

// kinds of names under the domain, for labels compared in lower case.
var (
	lblService = []byte("service")
	lblDirect  = []byte("direct")
	lblNode    = []byte("node")
	lblAddr    = []byte("addr")
	lblNS      = []byte("ns")
	lblTCP     = []byte("tcp")
	lblInAddr  = []byte("in-addr")
	lblIP6     = []byte("ip6")
	lblArpa    = []byte("arpa")
)

// bstr views b as a string without copying. The result is only passed to
// catalog lookups, which do not keep it, and dies before b is reused.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// respond answers the query msg into sc and returns the response, which
// aliases sc.out, and what to do with it. tcp selects the size limit.
func (s *Server) respond(sc *scratch, msg []byte, tcp bool) ([]byte, action) {
	q, w := &sc.q, &sc.w
	sc.rcode = -1
	switch q.parse(msg) {
	case parseDrop:
		return nil, actDrop
	case parseFormErr:
		return s.headerOnly(sc, rcodeForm), actReply
	case parseNotImp:
		return s.headerOnly(sc, rcodeImp), actReply
	}

	size := dnsMinSize
	switch {
	case tcp:
		size = 65535
	case q.opt:
		size = max(dnsMinSize, min(int(q.udpSize), s.cfg.EDNSBufferSize))
	}
	sc.maxSize = size
	if q.opt {
		size -= optLen
	}
	w.reset(size, s.domainWire)

	inZone := s.inZone(q)
	if q.opt && q.ednsVer > 0 {
		// RFC 6891 6.1.3: answer BADVERS for versions above 0.
		return s.finish(sc, inZone, rcodeBadVers, false), actReply
	}
	s.question(sc, inZone)

	if !inZone {
		if (q.qtype == typePTR || q.qtype == typeANY) && s.reverse(sc) {
			return s.finish(sc, true, rcodeOK, false), actReply
		}
		if s.fwd != nil {
			return nil, actForward
		}
		return s.finish(sc, false, rcodeRef, false), actReply
	}
	if q.qclass != classIN && q.qclass != classANY || q.qtype == typeAXFR || q.qtype == typeIXFR {
		return s.finish(sc, false, rcodeRef, false), actReply
	}
	rcode, tc := s.zone(sc)
	return s.finish(sc, true, rcode, tc), actReply
}

// dnsMinSize is the UDP size every client accepts (RFC 1035 4.2.1).
const dnsMinSize = 512

// inZone reports whether the question name is the domain or below it.
func (s *Server) inZone(q *query) bool {
	k := q.nlabels - s.domainLabels
	if k < 0 {
		return false
	}
	off := q.nameLen - len(s.domainWire)
	return (k == 0 && off == 0 || k > 0 && int(q.labels[k]) == off) &&
		bytes.Equal(q.lower[off:q.nameLen], s.domainWire)
}

// question writes the header space and the question, in the client's case.
func (s *Server) question(sc *scratch, inZone bool) {
	q, w := &sc.q, &sc.w
	w.n = headerLen
	w.raw(q.name[:q.nameLen])
	w.u16(q.qtype)
	w.u16(q.qclass)
	if inZone {
		w.domOff = headerLen + q.nameLen - len(s.domainWire)
	}
}

// headerOnly is the reply to a query whose question could not be used.
func (s *Server) headerOnly(sc *scratch, rcode int) []byte {
	q, w := &sc.q, &sc.w
	sc.rcode = rcode
	w.reset(dnsMinSize, s.domainWire)
	flags := flagQR | q.flags&(0xF<<11|flagRD|flagCD) | uint16(rcode)
	binary.BigEndian.PutUint16(w.b[0:], q.id)
	binary.BigEndian.PutUint16(w.b[2:], flags)
	clear(w.b[4:headerLen])
	w.n = headerLen
	return w.b[:headerLen]
}

// finish writes the OPT record and the header and returns the message.
func (s *Server) finish(sc *scratch, auth bool, rcode int, tc bool) []byte {
	q, w := &sc.q, &sc.w
	sc.rcode = rcode
	if rcode == rcodeBadVers {
		// The question is echoed; nothing else is.
		w.n = headerLen
		w.raw(q.name[:q.nameLen])
		w.u16(q.qtype)
		w.u16(q.qclass)
		w.an, w.ns, w.ar = 0, 0, 0
	}
	if q.opt {
		w.limit += optLen // the room kept for it
		w.u8(0)
		w.u16(typeOPT)
		w.u16(uint16(s.cfg.EDNSBufferSize))
		var ttl uint32
		ttl |= uint32(rcode>>4) << 24
		if q.do {
			ttl |= 0x8000 // RFC 3225 3: copy DO
		}
		w.u32(ttl)
		w.u16(0)
		w.ar++
	}
	flags := flagQR | q.flags&(flagRD|flagCD) | uint16(rcode&0xF)
	if auth {
		flags |= flagAA
	}
	if s.fwd != nil {
		flags |= flagRA
	}
	if tc {
		flags |= flagTC
	}
	b := w.b
	binary.BigEndian.PutUint16(b[0:], q.id)
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[6:], uint16(w.an))
	binary.BigEndian.PutUint16(b[8:], uint16(w.ns))
	binary.BigEndian.PutUint16(b[10:], uint16(w.ar))
	return b[:w.n]
}

// zone answers a name under the domain and returns the RCODE and whether
// the answer was truncated.
func (s *Server) zone(sc *scratch) (rcode int, tc bool) {
	q := &sc.q
	snap := s.deps.Catalog.Current()
	k := q.nlabels - s.domainLabels // labels left of the domain
	if k == 0 {
		return s.apex(sc, snap)
	}
	switch top := q.label(k - 1); {
	case bytes.Equal(top, lblService):
		return s.service(sc, snap, k-1, false)
	case bytes.Equal(top, lblDirect):
		switch {
		case k == 1:
			return s.nodata(sc, snap)
		case !bytes.Equal(q.label(k-2), lblService):
			return s.nxdomain(sc, snap)
		}
		return s.service(sc, snap, k-2, true)
	case bytes.Equal(top, lblNode):
		switch k {
		case 1:
			return s.nodata(sc, snap)
		case 2:
			return s.node(sc, snap, q.label(0))
		}
	case bytes.Equal(top, lblAddr):
		switch k {
		case 1:
			return s.nodata(sc, snap)
		case 2:
			if ip, ok := parseHexAddr(q.label(0)); ok {
				return s.address(sc, snap, ip, s.nodeTTL)
			}
		}
	case k == 1 && s.cfg.NodeName == "" && bytes.Equal(top, lblNS):
		return s.address(sc, snap, s.cfg.AdvertiseAddr, s.nodeTTL)
	}
	return s.nxdomain(sc, snap)
}

// apex answers SOA and NS at the domain itself.
func (s *Server) apex(sc *scratch, snap *catalog.Snapshot) (int, bool) {
	q, w := &sc.q, &sc.w
	if q.qtype == typeSOA || q.qtype == typeANY {
		w.ptr(w.domOff)
		s.soa(sc, snap)
		w.an++
	}
	if q.qtype == typeNS || q.qtype == typeANY {
		w.ptr(w.domOff)
		at := w.rrHeader(typeNS, s.nodeTTL)
		nsOff := w.n
		s.nsName(w)
		w.endRR(at)
		w.an++
		m := w.mark()
		w.ptr(nsOff)
		w.addrRR(s.cfg.AdvertiseAddr, s.nodeTTL)
		if w.commit(m) {
			w.ar++
		}
	}
	if w.an == 0 {
		return s.nodata(sc, snap)
	}
	return rcodeOK, false
}

// nsName writes this server's name: <node>.node.<domain> or ns.<domain>.
func (s *Server) nsName(w *wmsg) {
	if s.cfg.NodeName != "" {
		label(w, s.cfg.NodeName)
		label(w, lblNode)
	} else {
		label(w, lblNS)
	}
	w.domain()
}

// soa writes the SOA record after its owner name. The serial is the catalog
// index, so it changes whenever an answer may have.
func (s *Server) soa(sc *scratch, snap *catalog.Snapshot) {
	w := &sc.w
	at := w.rrHeader(typeSOA, s.negTTL)
	s.nsName(w)
	label(w, "hostmaster")
	w.domain()
	w.u32(uint32(snap.Index()))
	w.u32(3600)  // refresh: no secondaries, informational
	w.u32(600)   // retry
	w.u32(86400) // expire
	w.u32(s.negTTL)
	w.endRR(at)
}

// nodata is NOERROR with no answer and the SOA for negative caching.
func (s *Server) nodata(sc *scratch, snap *catalog.Snapshot) (int, bool) {
	s.negative(sc, snap)
	return rcodeOK, false
}

// nxdomain is NXDOMAIN with the SOA for negative caching.
func (s *Server) nxdomain(sc *scratch, snap *catalog.Snapshot) (int, bool) {
	s.negative(sc, snap)
	return rcodeNX, false
}

func (s *Server) negative(sc *scratch, snap *catalog.Snapshot) {
	w := &sc.w
	w.n = headerLen + sc.q.nameLen + 4 // drop any partial answer
	w.an, w.ns, w.ar = 0, 0, 0
	w.ptr(w.domOff)
	s.soa(sc, snap)
	w.ns++
}

// wants reports whether the query asks for addresses of ip's family.
func wants(qtype uint16, ip netip.Addr) bool {
	switch qtype {
	case typeANY:
		return true
	case typeA:
		return is4(ip)
	case typeAAAA:
		return ip.Is6() && !ip.Is4In6()
	}
	return false
}

// node answers <node>.node.<domain>.
func (s *Server) node(sc *scratch, snap *catalog.Snapshot, name []byte) (int, bool) {
	if m, ok := snap.Member(bstr(name)); ok {
		return s.address(sc, snap, m.IP, s.nodeTTL)
	}
	if s.cfg.NodeName != "" && strings.EqualFold(bstr(name), s.cfg.NodeName) {
		// This node, before gossip has published it.
		return s.address(sc, snap, s.cfg.AdvertiseAddr, s.nodeTTL)
	}
	return s.nxdomain(sc, snap)
}

// address answers a name that exists and owns one address.
func (s *Server) address(sc *scratch, snap *catalog.Snapshot, ip netip.Addr, ttl uint32) (int, bool) {
	w := &sc.w
	if !ip.IsValid() || !wants(sc.q.qtype, ip) {
		return s.nodata(sc, snap)
	}
	w.ptr(headerLen)
	w.addrRR(ip, ttl)
	w.an++
	return rcodeOK, false
}

// service answers the n labels left of "service" (or "service.direct").
func (s *Server) service(sc *scratch, snap *catalog.Snapshot, n int, direct bool) (int, bool) {
	q := &sc.q
	var svc, tag []byte
	srvForm := false
	switch n {
	case 0:
		return s.nodata(sc, snap) // the empty non-terminal service.<domain>
	case 1:
		svc = q.label(0)
	case 2:
		l0, l1 := q.label(0), q.label(1)
		if len(l0) > 1 && l0[0] == '_' && len(l1) > 1 && l1[0] == '_' {
			// RFC 2782 _<svc>._<proto>; like Consul, a protocol other than
			// tcp is read as a tag.
			srvForm, svc = true, l0[1:]
			if !bytes.Equal(l1[1:], lblTCP) {
				tag = l1[1:]
			}
		} else {
			tag, svc = l0, l1
		}
	default:
		return s.nxdomain(sc, snap)
	}
	all := snap.Instances(bstr(svc))
	if len(all) == 0 || len(tag) > 0 && !anyHasTag(all, bstr(tag)) {
		return s.nxdomain(sc, snap)
	}
	useVIP := s.deps.VIPs != nil && !direct && !s.cfg.Direct
	var vip netip.Addr
	if useVIP {
		// Pass the catalog's own string: the resolver may keep it.
		if a, ok := s.deps.VIPs.VIP(all[0].Service.Name); ok && a.IsValid() {
			vip = a
		}
	}
	switch qt := q.qtype; {
	case qt == typeSRV || srvForm && qt == typeANY:
		if vip.IsValid() {
			return s.srvVIP(sc, snap, all, vip)
		}
		return s.srv(sc, snap, snap.Passing(bstr(svc), bstr(tag)))
	case srvForm:
		return s.nodata(sc, snap)
	case qt == typeA || qt == typeAAAA || qt == typeANY:
		if vip.IsValid() {
			return s.address(sc, snap, vip, s.serviceTTL)
		}
		return s.addresses(sc, snap, snap.Passing(bstr(svc), bstr(tag)))
	}
	return s.nodata(sc, snap)
}

func anyHasTag(all []catalog.Instance, tag string) bool {
	for i := range all {
		if all[i].Service.HasTag(tag) {
			return true
		}
	}
	return false
}

// shuffle fills sc.perm with a random permutation of 0..n-1.
func (sc *scratch) shuffle(n int) []int32 {
	p := sc.perm[:0]
	for i := 0; i < n; i++ {
		p = append(p, int32(i))
	}
	for i := n - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	sc.perm = p
	return p
}

// addresses answers A/AAAA with the passing instances, shuffled.
func (s *Server) addresses(sc *scratch, snap *catalog.Snapshot, insts []catalog.Instance) (int, bool) {
	w, qt := &sc.w, sc.q.qtype
	for _, i := range sc.shuffle(len(insts)) {
		ip := insts[i].IP
		if !ip.IsValid() || !wants(qt, ip) {
			continue
		}
		m := w.mark()
		w.ptr(headerLen)
		w.addrRR(ip, s.serviceTTL)
		if !w.commit(m) {
			return rcodeOK, s.truncates(sc)
		}
		w.an++
	}
	if w.an == 0 {
		return s.nodata(sc, snap)
	}
	return rcodeOK, false
}

// truncates reports whether a response that ran out of room gets the TC
// bit: over UDP the client retries over TCP; over TCP there is nothing
// bigger to retry with, so the answer is just the records that fit.
func (s *Server) truncates(sc *scratch) bool {
	if sc.maxSize < 65535 {
		s.metrics.truncated.Inc()
		return true
	}
	return false
}

// srv answers SRV with one record for each passing instance that has a port,
// shuffled, and the targets' addresses in the additional section. The target
// is <node>.node.<domain> for an instance at its node's address, and
// <hex-ip>.addr.<domain> for one with its own address, so that a node name
// never resolves to two different addresses.
func (s *Server) srv(sc *scratch, snap *catalog.Snapshot, insts []catalog.Instance) (int, bool) {
	w := &sc.w
	sc.targets = sc.targets[:0]
	tc := false
	for _, i := range sc.shuffle(len(insts)) {
		in := &insts[i]
		if in.Service.Port <= 0 || !in.IP.IsValid() {
			continue
		}
		nodeTarget := in.IP == in.Member.IP
		if nodeTarget && !nameable(in.Member.Node) {
			continue
		}
		m := w.mark()
		w.ptr(headerLen)
		at := w.rrHeader(typeSRV, s.serviceTTL)
		w.u16(1) // priority
		w.u16(1) // weight
		w.u16(uint16(in.Service.Port))
		off := w.n
		if nodeTarget {
			label(w, in.Member.Node)
			label(w, lblNode)
		} else {
			hexAddrLabel(w, in.IP)
			label(w, lblAddr)
		}
		w.domain()
		w.endRR(at)
		if !w.commit(m) {
			tc = s.truncates(sc)
			break
		}
		w.an++
		if off >= 0x4000 {
			off = -1
		}
		t := target{ip: in.IP, off: off}
		if nodeTarget {
			t.m = in.Member
		}
		if !hasTarget(sc.targets, t) {
			sc.targets = append(sc.targets, t)
		}
	}
	if w.an == 0 && !tc {
		return s.nodata(sc, snap)
	}
	s.additional(sc)
	return rcodeOK, tc
}

func hasTarget(ts []target, t target) bool {
	for i := range ts {
		if ts[i].m == t.m && ts[i].ip == t.ip && ts[i].name == t.name {
			return true
		}
	}
	return false
}

// srvVIP answers SRV in VIP mode: one record per declared port, all with the
// target <svc>.service.<domain>, whose address is the VIP, so that SRV
// clients also go through the mesh.
func (s *Server) srvVIP(sc *scratch, snap *catalog.Snapshot, all []catalog.Instance, vip netip.Addr) (int, bool) {
	w := &sc.w
	name := all[0].Service.Name
	if !nameable(name) {
		return s.nodata(sc, snap)
	}
	sc.ports = sc.ports[:0]
	for i := range all {
		p := all[i].Service.Port
		if p > 0 && !containsPort(sc.ports, uint16(p)) {
			sc.ports = append(sc.ports, uint16(p))
		}
	}
	sc.targets = sc.targets[:0]
	for _, p := range sc.ports {
		m := w.mark()
		w.ptr(headerLen)
		at := w.rrHeader(typeSRV, s.serviceTTL)
		w.u16(1)
		w.u16(1)
		w.u16(p)
		off := w.n
		label(w, name)
		label(w, lblService)
		w.domain()
		w.endRR(at)
		if !w.commit(m) {
			return rcodeOK, s.truncates(sc)
		}
		w.an++
		if len(sc.targets) == 0 {
			sc.targets = append(sc.targets, target{ip: vip, name: name, off: off})
		}
	}
	if w.an == 0 {
		return s.nodata(sc, snap)
	}
	s.additional(sc)
	return rcodeOK, false
}

func containsPort(ps []uint16, p uint16) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// additional writes the address of each SRV target while there is room.
// Additional records are optional (RFC 2181 9): running out of room here
// does not set TC.
func (s *Server) additional(sc *scratch) {
	w := &sc.w
	for _, t := range sc.targets {
		m := w.mark()
		ttl := s.serviceTTL
		switch {
		case t.off >= 0:
			w.ptr(t.off)
		case t.m != nil:
			label(w, t.m.Node)
			label(w, lblNode)
			w.domain()
		case t.name != "":
			label(w, t.name)
			label(w, lblService)
			w.domain()
		default:
			hexAddrLabel(w, t.ip)
			label(w, lblAddr)
			w.domain()
		}
		if t.m != nil {
			ttl = s.nodeTTL
		}
		w.addrRR(t.ip, ttl)
		if !w.commit(m) {
			return
		}
		w.ar++
	}
}

const hexDigits = "0123456789abcdef"

// hexAddrLabel writes ip as one label of hex digits: 8 for IPv4, 32 for
// IPv6, as Consul's <hex>.addr names.
func hexAddrLabel(w *wmsg, ip netip.Addr) {
	var b []byte
	if is4(ip) {
		a := ip.Unmap().As4()
		b = a[:]
	} else {
		a := ip.As16()
		b = a[:]
	}
	w.u8(byte(2 * len(b)))
	for _, x := range b {
		w.u8(hexDigits[x>>4])
		w.u8(hexDigits[x&0xF])
	}
}

// parseHexAddr reads a <hex>.addr label.
func parseHexAddr(l []byte) (netip.Addr, bool) {
	var a [16]byte
	if len(l) != 8 && len(l) != 32 {
		return netip.Addr{}, false
	}
	for i := 0; i < len(l); i += 2 {
		hi, lo := unhex(l[i]), unhex(l[i+1])
		if hi < 0 || lo < 0 {
			return netip.Addr{}, false
		}
		a[i/2] = byte(hi<<4 | lo)
	}
	if len(l) == 8 {
		return netip.AddrFrom4([4]byte(a[:4])), true
	}
	return netip.AddrFrom16(a), true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// reverse answers a PTR question for a VIP or a catalog address, and
// reports false when the address is not ours (the caller forwards it).
func (s *Server) reverse(sc *scratch) bool {
	q, w := &sc.q, &sc.w
	ip, ok := reverseAddr(q)
	if !ok {
		return false
	}
	if s.deps.VIPs != nil {
		if svc, ok := s.deps.VIPs.ServiceAt(ip); ok && nameable(svc) {
			w.ptr(headerLen)
			at := w.rrHeader(typePTR, s.serviceTTL)
			label(w, svc)
			label(w, lblService)
			w.domain()
			w.endRR(at)
			w.an++
			return true
		}
	}
	snap := s.deps.Catalog.Current()
	for _, name := range snap.NamesAt(ip) {
		dot := strings.LastIndexByte(name, '.')
		if dot < 0 || !nameable(name[:dot]) {
			continue
		}
		kind, ttl := name[dot+1:], s.nodeTTL
		if kind == "service" {
			ttl = s.serviceTTL
		}
		if !nameable(kind) {
			continue
		}
		m := w.mark()
		w.ptr(headerLen)
		at := w.rrHeader(typePTR, ttl)
		label(w, name[:dot])
		label(w, kind)
		w.domain()
		w.endRR(at)
		if !w.commit(m) {
			break
		}
		w.an++
	}
	return w.an > 0
}

// reverseAddr reads the address of a full in-addr.arpa or ip6.arpa name.
func reverseAddr(q *query) (netip.Addr, bool) {
	n := q.nlabels
	if n < 2 || !bytes.Equal(q.label(n-1), lblArpa) {
		return netip.Addr{}, false
	}
	switch {
	case n == 6 && bytes.Equal(q.label(4), lblInAddr):
		var a [4]byte
		for i := 0; i < 4; i++ {
			v, ok := decimalOctet(q.label(i))
			if !ok {
				return netip.Addr{}, false
			}
			a[3-i] = v
		}
		return netip.AddrFrom4(a), true
	case n == 34 && bytes.Equal(q.label(32), lblIP6):
		var a [16]byte
		for i := 0; i < 32; i++ {
			l := q.label(i)
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			v := unhex(l[0])
			if v < 0 {
				return netip.Addr{}, false
			}
			// Label 0 is the last nibble of the address.
			n := 31 - i
			if n%2 == 0 {
				a[n/2] |= byte(v << 4)
			} else {
				a[n/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(a).Unmap(), true
	}
	return netip.Addr{}, false
}

func decimalOctet(l []byte) (byte, bool) {
	if len(l) == 0 || len(l) > 3 || len(l) > 1 && l[0] == '0' {
		return 0, false
	}
	v := 0
	for _, c := range l {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 255 {
		return 0, false
	}
	return byte(v), true
}
