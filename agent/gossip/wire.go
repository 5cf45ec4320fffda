package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/meshwork/meshwork/catalog"
)

// ErrBadMessage wraps every error about a message received from the network:
// it could not be decoded, or it decoded to something invalid.
var ErrBadMessage = errors.New("bad gossip message")

// errInvalid marks errors about messages that decoded but carry invalid
// content (as opposed to malformed bytes); it is wrapped with ErrBadMessage.
var errInvalid = errors.New("invalid content")

// errUnexpectedState is the error for a push/pull state that is another
// kind of message.
var errUnexpectedState = fmt.Errorf("%w: push/pull state is not a state message", ErrBadMessage)

// protocolVersion is the version of the messages below, carried by memberlist
// as the delegate protocol version so that incompatible agents refuse each
// other at join.
const protocolVersion = 1

// msgType is the first byte of every message of this package.
type msgType uint8

const (
	msgRecord    msgType = 1 // wireRecord: a node's record
	msgPull      msgType = 2 // pullRequest: send me this node's record
	msgSuspect   msgType = 3 // notice: a probe of this node failed
	msgDown      msgType = 4 // notice: a probe failed and its TCP port refused
	msgQuery     msgType = 5 // query: a keyring operation for every node
	msgQueryResp msgType = 6 // queryResp: one node's answer to a query
	msgState     msgType = 7 // pushState: the records of every live node
)

func (t msgType) String() string {
	switch t {
	case msgRecord:
		return "record"
	case msgPull:
		return "pull"
	case msgSuspect:
		return "suspect"
	case msgDown:
		return "down"
	case msgQuery:
		return "query"
	case msgQueryResp:
		return "query_response"
	case msgState:
		return "state"
	default:
		return "unknown"
	}
}

// Limits on what a peer may send, so that a bad message cannot make a node
// allocate without bound.
const (
	maxMessageSize = 16 << 20 // a push/pull state of hundreds of large records
	maxRecordSize  = 1 << 20  // one record: thousands of services
	maxStateItems  = 100000
	maxKeyLen      = 32
)

// wireRecord is a record as it travels, with its owner's leaving flag.
type wireRecord struct {
	Record catalog.Record `msgpack:"r"`
	// Leaving is set on the last version a node publishes before a graceful
	// leave, so that others tell its departure from a failure.
	Leaving bool `msgpack:"l,omitempty"`
	// From names the node that sent this copy over a stream, so that
	// forwarding skips it. Empty in broadcasts and push/pull.
	From string `msgpack:"f,omitempty"`
	// Fwd asks the receiver to forward a version new to it over streams to
	// a few more members: set on records too large for a packet.
	Fwd bool `msgpack:"w,omitempty"`
}

// pullRequest asks a node for the record of Node when it holds a version
// above Have. From is where to send it.
type pullRequest struct {
	From string `msgpack:"f"`
	Node string `msgpack:"n"`
	Have uint64 `msgpack:"h"`
}

// notice reports a suspicion about Node, as of its liveness Epoch as the
// reporter knew it. A node refutes a notice by raising its epoch.
type notice struct {
	Node  string `msgpack:"n"`
	Epoch uint64 `msgpack:"e"`
	From  string `msgpack:"f"`
}

// query is a keyring operation sent to every node; each answers Origin.
type query struct {
	ID     uint64 `msgpack:"i"`
	Origin string `msgpack:"o"`
	Op     string `msgpack:"op"`
	Key    []byte `msgpack:"k,omitempty"`
}

// queryResp is one node's answer to a query.
type queryResp struct {
	ID      uint64   `msgpack:"i"`
	Node    string   `msgpack:"n"`
	Err     string   `msgpack:"e,omitempty"`
	Keys    [][]byte `msgpack:"ks,omitempty"`
	Primary []byte   `msgpack:"p,omitempty"`
	// Configured is where the node's configured key stands in its
	// keyring (a configuredStatus); empty from a node that does not say.
	Configured string `msgpack:"c,omitempty"`
}

// pushState is the user part of a push/pull exchange.
type pushState struct {
	Records []wireRecord `msgpack:"rs"`
}

// nodeMeta is what a node puts in memberlist's alive message. It must stay
// far below memberlist.MetaMaxSize (512 bytes); it is about 30.
type nodeMeta struct {
	// Version is the node's record version.
	Version uint64 `msgpack:"v"`
	// Epoch is the node's liveness epoch: set from the clock at start and
	// raised whenever it refutes a suspect or down notice.
	Epoch   uint64 `msgpack:"e"`
	Server  bool   `msgpack:"s,omitempty"`
	Leaving bool   `msgpack:"l,omitempty"`
	// Big is set when the record does not fit in a packet: it travels over
	// streams, and a node that misses it pulls it sooner.
	Big bool `msgpack:"b,omitempty"`
}

// message is one decoded message: Type tells which field is set.
type message struct {
	Type   msgType
	Record *wireRecord
	Pull   *pullRequest
	Notice *notice
	Query  *query
	Resp   *queryResp
	State  *pushState
}

var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.TypeInfos = codec.NewTypeInfos([]string{"msgpack"})
	h.WriteExt = true
	// A length prefix in a hostile message must not make the decoder
	// allocate a huge slice before it finds out the data is not there.
	h.MaxInitLen = 1024
	return h
}()

// encode returns t followed by v in msgpack.
func encode(t msgType, v any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(byte(t))
	if err := codec.NewEncoder(&buf, msgpackHandle).Encode(v); err != nil {
		return nil, fmt.Errorf("gossip: encode %s: %w", t, err)
	}
	return buf.Bytes(), nil
}

// mustEncode is encode for values built by this package, whose encoding
// cannot fail.
func mustEncode(t msgType, v any) []byte {
	b, err := encode(t, v)
	if err != nil {
		panic(err)
	}
	return b
}

func decodeBody(b []byte, v any) (err error) {
	defer func() {
		// The codec reports some malformed input by panicking; a message from
		// the network must never bring the agent down.
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed msgpack: %v", r)
		}
	}()
	return codec.NewDecoderBytes(b, msgpackHandle).Decode(v)
}

// decodeMessage decodes and checks one message received from the network.
// Every error wraps ErrBadMessage and says what was wrong.
func decodeMessage(b []byte) (message, error) {
	var m message
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", ErrBadMessage)
	}
	if len(b) > maxMessageSize {
		return m, fmt.Errorf("%w: %d bytes, over the %d limit", ErrBadMessage, len(b), maxMessageSize)
	}
	m.Type = msgType(b[0])
	body := b[1:]
	var target any
	switch m.Type {
	case msgRecord:
		if len(body) > maxRecordSize {
			return m, fmt.Errorf("%w: record of %d bytes, over the %d limit", ErrBadMessage, len(body), maxRecordSize)
		}
		m.Record = &wireRecord{}
		target = m.Record
	case msgPull:
		m.Pull = &pullRequest{}
		target = m.Pull
	case msgSuspect, msgDown:
		m.Notice = &notice{}
		target = m.Notice
	case msgQuery:
		m.Query = &query{}
		target = m.Query
	case msgQueryResp:
		m.Resp = &queryResp{}
		target = m.Resp
	case msgState:
		m.State = &pushState{}
		target = m.State
	default:
		return m, fmt.Errorf("%w: unknown type %d", ErrBadMessage, b[0])
	}
	if err := decodeBody(body, target); err != nil {
		return m, fmt.Errorf("%w: %s: %v", ErrBadMessage, m.Type, err)
	}
	if err := m.check(); err != nil {
		return m, fmt.Errorf("%w: %s: %w: %v", ErrBadMessage, m.Type, errInvalid, err)
	}
	return m, nil
}

// check validates a decoded message.
func (m *message) check() error {
	switch m.Type {
	case msgRecord:
		return m.Record.check()
	case msgPull:
		if err := checkName("from", m.Pull.From); err != nil {
			return err
		}
		return checkName("node", m.Pull.Node)
	case msgSuspect, msgDown:
		if err := checkName("node", m.Notice.Node); err != nil {
			return err
		}
		if m.Notice.Epoch > maxClock {
			return fmt.Errorf("epoch %d is past the clock's range", m.Notice.Epoch)
		}
		return checkName("from", m.Notice.From)
	case msgQuery:
		if err := checkName("origin", m.Query.Origin); err != nil {
			return err
		}
		switch m.Query.Op {
		case opList:
		case opInstall, opUse, opRemove:
			if err := checkKeyLen(m.Query.Key); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown operation %q", m.Query.Op)
		}
	case msgQueryResp:
		if err := checkName("node", m.Resp.Node); err != nil {
			return err
		}
		if len(m.Resp.Keys) > 64 {
			return fmt.Errorf("%d keys, over the limit of 64", len(m.Resp.Keys))
		}
		for _, k := range m.Resp.Keys {
			if err := checkKeyLen(k); err != nil {
				return err
			}
		}
	case msgState:
		// Each record is checked when it is merged, so that one bad record
		// does not cost the others.
		if len(m.State.Records) > maxStateItems {
			return fmt.Errorf("%d records, over the limit of %d", len(m.State.Records), maxStateItems)
		}
	}
	return nil
}

func (w *wireRecord) check() error {
	if err := w.Record.Validate(); err != nil {
		return err
	}
	if err := checkName("node", w.Record.Node); err != nil {
		return err
	}
	if w.Record.Version == 0 {
		return fmt.Errorf("record %q: version is 0", w.Record.Node)
	}
	if w.Record.Version > maxClock {
		return fmt.Errorf("record %q: version %d is past the clock's range", w.Record.Node, w.Record.Version)
	}
	if w.From != "" {
		return checkName("from", w.From)
	}
	return nil
}

// maxClock bounds record versions and liveness epochs. Both are nanosecond
// clock readings (until the year 2262), and a node that receives its own
// record or a notice with a higher one jumps past it: a value near 2^64
// would wrap it around to 0 and mute the node's later updates.
const maxClock = math.MaxInt64

func checkName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%s: empty node name", field)
	}
	if err := validName(name); err != nil {
		return fmt.Errorf("%s: node name %q: %v", field, name, err)
	}
	return nil
}

func checkKeyLen(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("key of %d bytes, want 16, 24 or 32", len(k))
}

func encodeMeta(m *nodeMeta) []byte {
	var buf bytes.Buffer
	if err := codec.NewEncoder(&buf, msgpackHandle).Encode(m); err != nil {
		panic(err) // a struct of numbers and booleans always encodes
	}
	return buf.Bytes()
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty node meta", ErrBadMessage)
	}
	if err := decodeBody(b, &m); err != nil {
		return m, fmt.Errorf("%w: node meta: %v", ErrBadMessage, err)
	}
	return m, nil
}
