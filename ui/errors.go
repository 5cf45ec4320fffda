package ui

import (
	"errors"
	"fmt"
)

// Errors of the package; wrapped with what was being done, compared with
// errors.Is.
var (
	// ErrNoAsset: no embedded asset has the path asked for.
	ErrNoAsset = errors.New("no such UI asset")
	// ErrScrape: an agent's telemetry listener could not be read.
	ErrScrape = errors.New("agent metrics unreadable")
	// ErrPrometheus: the Prometheus HTTP API failed or answered something
	// that is not a vector.
	ErrPrometheus = errors.New("prometheus query failed")
	// ErrConfig: the UI's configuration is invalid.
	ErrConfig = errors.New("invalid ui config")
)

func errNoAsset(path string) error { return fmt.Errorf("ui: %q: %w", path, ErrNoAsset) }
