package boltlog

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

func TestDecodeRejectsBadEntries(t *testing.T) {
	good, err := encodeEntry(entry(3))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty":          {},
		"other version":  append([]byte{9}, good[1:]...),
		"truncated":      good[:len(good)-3],
		"trailing bytes": append(append([]byte(nil), good...), 0),
		"huge length":    {entryVersion, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad varint":     {entryVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		t.Run(name, func(t *testing.T) {
			var l raft.Log
			if err := decodeEntry(3, b, &l); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode: %v, want ErrCorrupt", err)
			}
		})
	}
	var l raft.Log
	if err := decodeEntry(3, good, &l); err != nil || !sameLog(&l, entry(3)) {
		t.Fatalf("decode of a good entry: %+v, %v", l, err)
	}
}

// FuzzDecodeEntry feeds the decoder what a damaged file could hold: it
// must return an entry or ErrCorrupt, never panic, and what it accepts
// must encode again.
func FuzzDecodeEntry(f *testing.F) {
	for _, l := range []*raft.Log{entry(1), {Index: 2}, {Index: 3, Type: raft.LogConfiguration, Data: make([]byte, 300)}} {
		b, err := encodeEntry(l)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{entryVersion, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeEntry(7, b, &l); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if _, err := encodeEntry(&l); err != nil {
			t.Fatalf("re-encode of an accepted entry: %v", err)
		}
	})
}
