package ca

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/meshwork/meshwork/internal/atomicfile"
)

// StateKeySize is the length of the key that seals the CA's private keys in
// the replicated state (AES-256-GCM).
const StateKeySize = 32

// sealVersion prefixes every sealed blob, so that the format can change.
const sealVersion = 1

// seal encrypts plain with key. purpose is bound as additional data, so that
// a sealed root key cannot be swapped in for an intermediate key.
func seal(key []byte, purpose string, plain []byte) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:1+aead.NonceSize()], plain, []byte(purpose)), nil
}

// open reverses seal. A wrong key or purpose gives ErrStateKey.
func open(key []byte, purpose string, sealed []byte) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < 1+aead.NonceSize()+aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: sealed %s is malformed", ErrStateKey, purpose)
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(purpose))
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open %s", ErrStateKey, purpose)
	}
	return plain, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != StateKeySize {
		return nil, fmt.Errorf("%w: state key is %d bytes, want %d", ErrStateKey, len(key), StateKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// NewStateKey returns a fresh random state key, base64-encoded as the state
// key file holds it.
func NewStateKey() (string, error) {
	k := make([]byte, StateKeySize)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// LoadStateKey reads the base64 state key in path. When the file does not
// exist and create is true it writes a new one with mode 0600 (for --dev and
// the first server); otherwise a missing file is an error. A file readable by
// group or others is refused, as ssh does for private keys.
func LoadStateKey(path string, create bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		k, err := NewStateKey()
		if err != nil {
			return nil, fmt.Errorf("ca: state key: %w", err)
		}
		if err := atomicfile.Write(path, []byte(k+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("ca: state key: %w", err)
		}
		b = []byte(k)
	} else if err != nil {
		return nil, fmt.Errorf("ca: state key: %w", err)
	} else {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("ca: state key: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("ca: state key %s: mode %o is readable by others; want 0600", path, fi.Mode().Perm())
		}
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != StateKeySize {
		return nil, fmt.Errorf("ca: state key %s: want %d bytes in base64", path, StateKeySize)
	}
	return k, nil
}

// randRead fills b from the system's random source.
func randRead(b []byte) (int, error) { return rand.Read(b) }
