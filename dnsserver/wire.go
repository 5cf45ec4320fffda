package dnsserver

import (
	"encoding/binary"
	"net/netip"
)

// This file reads queries and writes responses in DNS wire format directly,
// without building a dns.Msg: the hot path then allocates nothing, and every
// answer record is a few fixed-size copies. Names in answers are compressed
// against the question (RFC 1035 4.1.4), so the 0x20 case the client chose is
// what it gets back.

// Header flag bits (RFC 1035 4.1.1, RFC 4035 for CD).
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagCD = 1 << 4

	headerLen = 12
	// optLen is the size of the OPT record this server appends: root name,
	// type, class, TTL, RDLENGTH, no options.
	optLen = 11
	// maxLabels is the most labels a 255-byte name can hold.
	maxLabels = 127
	// maxPtrHops bounds compression pointers followed in one name.
	maxPtrHops = 16
	// outSlack lets one record be written past the limit before the size
	// check rolls it back; no record this server writes is that large.
	outSlack = 1024
)

// Record types and classes this server knows (RFC 1035, 2782, 3596, 6891).
const (
	typeA     = 1
	typeNS    = 2
	typeSOA   = 6
	typePTR   = 12
	typeAAAA  = 28
	typeSRV   = 33
	typeOPT   = 41
	typeIXFR  = 251
	typeAXFR  = 252
	typeANY   = 255
	classIN   = 1
	classANY  = 255
	rcodeOK   = 0
	rcodeForm = 1
	rcodeFail = 2
	rcodeNX   = 3
	rcodeImp  = 4
	rcodeRef  = 5
	// rcodeBadVers is the extended RCODE 16 (RFC 6891 6.1.3): its upper
	// eight bits go in the OPT TTL, its lower four in the header.
	rcodeBadVers = 16
)

// parseResult is what the parser decided about a query.
type parseResult int

const (
	parseOK      parseResult = iota
	parseDrop                // too short for a header, or a response: no reply
	parseFormErr             // reply FORMERR
	parseNotImp              // opcode other than QUERY: reply NOTIMP
)

// query is a parsed question. It lives in per-goroutine scratch memory and is
// overwritten by the next query.
type query struct {
	id    uint16
	flags uint16

	// name is the question name in wire form, uncompressed, in the case the
	// client sent; lower is the same name with ASCII letters lower-cased.
	name, lower [255]byte
	nameLen     int
	// labels holds the offset of each label (its length byte) in name, the
	// root label excluded.
	labels  [maxLabels]uint8
	nlabels int

	qtype, qclass uint16

	opt     bool // the query carried an OPT record
	udpSize uint16
	ednsVer uint8
	do      bool
}

// label returns label i (0 = leftmost) of the lower-cased name, without its
// length byte.
func (q *query) label(i int) []byte {
	off := int(q.labels[i])
	return q.lower[off+1 : off+1+int(q.lower[off])]
}

// parse reads msg into q.
func (q *query) parse(msg []byte) parseResult {
	if len(msg) < headerLen {
		return parseDrop
	}
	q.id = binary.BigEndian.Uint16(msg[0:])
	q.flags = binary.BigEndian.Uint16(msg[2:])
	q.opt, q.udpSize, q.ednsVer, q.do = false, 0, 0, false
	q.nameLen, q.nlabels, q.qtype, q.qclass = 0, 0, 0, 0
	if q.flags&flagQR != 0 {
		return parseDrop
	}
	if (q.flags>>11)&0xF != 0 {
		return parseNotImp
	}
	qd := binary.BigEndian.Uint16(msg[4:])
	an := int(binary.BigEndian.Uint16(msg[6:]))
	ns := int(binary.BigEndian.Uint16(msg[8:]))
	ar := int(binary.BigEndian.Uint16(msg[10:]))
	if qd != 1 {
		return parseFormErr
	}
	off, ok := q.readQName(msg, headerLen)
	if !ok || off+4 > len(msg) {
		return parseFormErr
	}
	q.qtype = binary.BigEndian.Uint16(msg[off:])
	q.qclass = binary.BigEndian.Uint16(msg[off+2:])
	off += 4
	for i := 0; i < an+ns; i++ {
		if off, ok = skipRR(msg, off); !ok {
			return parseFormErr
		}
	}
	for i := 0; i < ar; i++ {
		start := off
		if off, ok = skipName(msg, off); !ok || off+10 > len(msg) {
			return parseFormErr
		}
		typ := binary.BigEndian.Uint16(msg[off:])
		rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
		rdata := off + 10
		if rdata+rdlen > len(msg) {
			return parseFormErr
		}
		if typ == typeOPT {
			// RFC 6891 6.1.1: one OPT at most, owned by the root.
			if q.opt || off != start+1 || msg[start] != 0 || !validOptions(msg[rdata:rdata+rdlen]) {
				return parseFormErr
			}
			q.opt = true
			q.udpSize = binary.BigEndian.Uint16(msg[off+2:])
			ttl := binary.BigEndian.Uint32(msg[off+4:])
			q.ednsVer = uint8(ttl >> 16)
			q.do = ttl&0x8000 != 0
		}
		off = rdata + rdlen
	}
	return parseOK
}

// readQName copies the name at off into q.name and q.lower, following
// compression pointers backwards only, and returns the offset after it.
func (q *query) readQName(msg []byte, off int) (int, bool) {
	n, end, hops := 0, -1, 0
	for {
		if off >= len(msg) {
			return 0, false
		}
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if n+1 > len(q.name) {
					return 0, false
				}
				q.name[n], q.lower[n] = 0, 0
				q.nameLen = n + 1
				if end < 0 {
					end = off + 1
				}
				return end, true
			}
			if off+1+c > len(msg) || n+1+c+1 > len(q.name) || q.nlabels == maxLabels {
				return 0, false
			}
			q.labels[q.nlabels] = uint8(n)
			q.nlabels++
			q.name[n], q.lower[n] = byte(c), byte(c)
			for i, b := range msg[off+1 : off+1+c] {
				q.name[n+1+i] = b
				q.lower[n+1+i] = lowerASCII(b)
			}
			n += 1 + c
			off += 1 + c
		case 0xC0:
			if off+2 > len(msg) || hops == maxPtrHops {
				return 0, false
			}
			ptr := int(binary.BigEndian.Uint16(msg[off:]) & 0x3FFF)
			if ptr >= off {
				return 0, false // forward or self pointer: a loop or garbage
			}
			if end < 0 {
				end = off + 2
			}
			hops++
			off = ptr
		default:
			return 0, false // extended label types (RFC 6891 5) are obsolete
		}
	}
}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + ('a' - 'A')
	}
	return b
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(msg []byte, off int) (int, bool) {
	for total := 0; ; {
		if off >= len(msg) {
			return 0, false
		}
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return off + 1, true
			}
			total += c + 1
			if total > 254 {
				return 0, false
			}
			off += 1 + c
		case 0xC0:
			if off+2 > len(msg) {
				return 0, false
			}
			return off + 2, true
		default:
			return 0, false
		}
	}
}

// skipRR returns the offset after the resource record at off.
func skipRR(msg []byte, off int) (int, bool) {
	off, ok := skipName(msg, off)
	if !ok || off+10 > len(msg) {
		return 0, false
	}
	end := off + 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
	if end > len(msg) {
		return 0, false
	}
	return end, true
}

// validOptions reports whether the OPT RDATA is a well-formed list of
// {code, length, data} options.
func validOptions(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 4 {
			return false
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if 4+n > len(b) {
			return false
		}
		b = b[4+n:]
	}
	return true
}

// wmsg writes one response into a fixed buffer. Each record is written
// between mark and commit: a record that ends past limit is rolled back, so
// a response always holds whole records.
type wmsg struct {
	b     []byte // len(b) = 65535 + outSlack
	n     int
	limit int
	// domOff is the offset of the domain name (wire form) in the message,
	// or -1 while it has not been written at an offset a pointer can reach.
	domOff int
	dom    []byte // the domain, lower-case wire form
	// counts of the answer, authority and additional sections.
	an, ns, ar int
}

type mark struct{ n, domOff int }

func (w *wmsg) reset(limit int, dom []byte) {
	w.n, w.limit, w.domOff, w.dom = 0, limit, -1, dom
	w.an, w.ns, w.ar = 0, 0, 0
}

func (w *wmsg) mark() mark { return mark{w.n, w.domOff} }

// commit keeps what was written since m when it fits, or rolls it back.
func (w *wmsg) commit(m mark) bool {
	if w.n <= w.limit {
		return true
	}
	w.n, w.domOff = m.n, m.domOff
	return false
}

func (w *wmsg) u8(v byte) {
	w.b[w.n] = v
	w.n++
}

func (w *wmsg) u16(v uint16) {
	binary.BigEndian.PutUint16(w.b[w.n:], v)
	w.n += 2
}

func (w *wmsg) u32(v uint32) {
	binary.BigEndian.PutUint32(w.b[w.n:], v)
	w.n += 4
}

func (w *wmsg) raw(p []byte) { w.n += copy(w.b[w.n:], p) }

// label writes one label. Callers check len(s) <= 63 (nameable).
func label[T string | []byte](w *wmsg, s T) {
	w.b[w.n] = byte(len(s))
	w.n += 1 + copy(w.b[w.n+1:], s)
}

// ptr writes a compression pointer to off.
func (w *wmsg) ptr(off int) { w.u16(0xC000 | uint16(off)) }

// domain ends a name with the mesh domain: a pointer when it is already in
// the message, else the full name, remembered for the next ones.
func (w *wmsg) domain() {
	if w.domOff >= 0 {
		w.ptr(w.domOff)
		return
	}
	if w.n < 0x4000 {
		w.domOff = w.n
	}
	w.raw(w.dom)
}

// rrHeader writes the fixed part after the owner name and returns the offset
// of RDLENGTH, for endRR to fill in.
func (w *wmsg) rrHeader(typ uint16, ttl uint32) int {
	w.u16(typ)
	w.u16(classIN)
	w.u32(ttl)
	w.n += 2
	return w.n - 2
}

func (w *wmsg) endRR(rdlenAt int) {
	binary.BigEndian.PutUint16(w.b[rdlenAt:], uint16(w.n-rdlenAt-2))
}

// addr writes ip as A or AAAA RDATA, with its type, after the owner name.
func (w *wmsg) addrRR(ip netip.Addr, ttl uint32) {
	if ip.Is4() || ip.Is4In6() {
		a := ip.Unmap().As4()
		w.u16(typeA)
		w.u16(classIN)
		w.u32(ttl)
		w.u16(4)
		w.raw(a[:])
		return
	}
	a := ip.As16()
	w.u16(typeAAAA)
	w.u16(classIN)
	w.u32(ttl)
	w.u16(16)
	w.raw(a[:])
}

// nameable reports whether s fits in one label.
func nameable(s string) bool { return len(s) > 0 && len(s) <= 63 }

// is4 reports whether ip answers A queries (AAAA otherwise).
func is4(ip netip.Addr) bool { return ip.Is4() || ip.Is4In6() }
