// Package atomicfile writes files that are either wholly old or wholly new,
// never half written, even across a crash: registrations, the keyring, the
// cached policy, key material and backups all go through it.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data. It writes a temporary file beside path,
// created with perm from the start (key material is never readable by
// others, even for a moment), syncs it, renames it over path and syncs the
// directory so that the rename itself survives a crash. Missing parent
// directories are created with mode 0700.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
