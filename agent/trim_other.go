//go:build !linux

package agent

// releaseStartupPages is a no-op where MADV_PAGEOUT does not exist.
func releaseStartupPages() (int, error) { return 0, nil }
