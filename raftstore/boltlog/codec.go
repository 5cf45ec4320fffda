package boltlog

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// entryVersion is the first byte of every stored entry, so that the format
// can change without guessing what an old file holds.
const entryVersion = 1

// encodeKey is the bucket key of a log index: big-endian, so that bolt's
// byte order is index order and a cursor walks the log in sequence.
func encodeKey(index uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], index)
	return k[:]
}

func decodeKey(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("%w: key of %d bytes, want 8", ErrCorrupt, len(k))
	}
	return binary.BigEndian.Uint64(k), nil
}

// encodeEntry writes l (but its index, which is the key) as: version byte,
// uvarint term, uvarint type, length-prefixed data, length-prefixed
// extensions, length-prefixed AppendedAt (time.MarshalBinary).
func encodeEntry(l *raft.Log) ([]byte, error) {
	at, err := l.AppendedAt.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("boltlog: encode entry %d: AppendedAt: %w", l.Index, err)
	}
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(l.Data)+len(l.Extensions)+len(at)+8)
	b = append(b, entryVersion)
	b = binary.AppendUvarint(b, l.Term)
	b = binary.AppendUvarint(b, uint64(l.Type))
	b = appendBytes(b, l.Data)
	b = appendBytes(b, l.Extensions)
	b = appendBytes(b, at)
	return b, nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// decodeEntry fills l from an encoded entry. It copies what it keeps: bolt's
// slices are valid only inside their transaction. Malformed input gives an
// error wrapping ErrCorrupt, never a panic.
func decodeEntry(index uint64, b []byte, l *raft.Log) error {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != entryVersion {
		return fmt.Errorf("%w: entry %d has format version %d, want %d", ErrCorrupt, index, v, entryVersion)
	}
	term := d.uvarint()
	typ := d.uvarint()
	data := d.bytes()
	ext := d.bytes()
	at := d.bytes()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err == nil && typ > 255 {
		d.err = fmt.Errorf("log type %d out of range", typ)
	}
	var appendedAt time.Time
	if d.err == nil {
		if err := appendedAt.UnmarshalBinary(at); err != nil {
			d.err = fmt.Errorf("AppendedAt: %v", err)
		}
	}
	if d.err != nil {
		return fmt.Errorf("%w: entry %d: %v", ErrCorrupt, index, d.err)
	}
	*l = raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext, AppendedAt: appendedAt}
	return nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("empty entry")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed field into a fresh slice (nil when empty,
// as raft hands them in).
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("field of %d bytes, only %d left", n, len(d.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	v := make([]byte, n)
	copy(v, d.b[:n])
	d.b = d.b[n:]
	return v
}
