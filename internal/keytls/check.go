package keytls

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// encodings are the forms of base64 a key may be written in.
var encodings = []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding}

// DecodeKey decodes a cluster or server key: base64, padded or not,
// standard or URL alphabet, of KeySize bytes. Its error says what is wrong
// in an operator's words, never repeats the key and names no field:
// ParseKey wraps it in ErrBadKey, agent/config names the YAML key.
func DecodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range encodings {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("decodes to %d bytes, want %d (make a key with `meshwork keygen`)", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, errors.New("is not valid base64 (make a key with `meshwork keygen`)")
}

// Held is a key that the entries of a list of accepted keys must not
// repeat, with the name it goes by in errors, in the caller's words (a
// Config field, a YAML key).
type Held struct {
	Name string
	Key  []byte
	// InUse is true for a key used here (the cluster or the server key),
	// false for one accepted in another list.
	InUse bool
}

// AcceptError is one problem of a list of accepted keys. It never holds a
// key: entries are named by their position.
type AcceptError struct {
	// Index is the entry at fault, or -1 for the list as a whole.
	Index int
	// Msg says what is wrong, without the list's name and the index.
	Msg string
	// err is the sentinel the problem matches: ErrBadKey for an entry of
	// the wrong size, nil otherwise.
	err error
}

func (e *AcceptError) Error() string { return e.Msg }

// Unwrap makes errors.Is(e, ErrBadKey) true for an entry of the wrong size.
func (e *AcceptError) Unwrap() error { return e.err }

// CheckAccepted checks a list of accepted keys, named list in errors: at
// most MaxAcceptKeys entries, each KeySize bytes, none repeating a key of
// held or an earlier entry (a key in two roles would let one secret stand
// for two). Every problem is returned, in the order of the entries. Config.Validate applies it to AcceptKeys and
// AcceptServerKeys; agent/config to accept_cluster_keys and
// accept_server_keys, naming the YAML paths.
func CheckAccepted(list string, keys [][]byte, held ...Held) []*AcceptError {
	var errs []*AcceptError
	if len(keys) > MaxAcceptKeys {
		errs = append(errs, &AcceptError{Index: -1, Msg: fmt.Sprintf("lists %d keys, at most %d: a rotation needs one", len(keys), MaxAcceptKeys)})
	}
	for i, k := range keys {
		if len(k) != KeySize {
			errs = append(errs, &AcceptError{Index: i, Msg: fmt.Sprintf("is %d bytes, want %d (make a key with `meshwork keygen`)", len(k), KeySize), err: ErrBadKey})
			continue
		}
		for _, h := range held {
			if h.Key == nil || subtle.ConstantTimeCompare(k, h.Key) != 1 {
				continue
			}
			if h.InUse {
				errs = append(errs, &AcceptError{Index: i, Msg: fmt.Sprintf("is the key in use as %s: list only other keys here (the old one during a rotation)", h.Name)})
			} else {
				errs = append(errs, &AcceptError{Index: i, Msg: fmt.Sprintf("is the same key as %s: list each key once, and never a server key together with a cluster key", h.Name)})
			}
			break
		}
		held = append(held, Held{Name: fmt.Sprintf("%s[%d]", list, i), Key: k})
	}
	return errs
}
