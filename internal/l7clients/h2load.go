package l7clients

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrH2loadOutput is returned by ParseH2load for output without a whole
// summary, as when h2load could not start.
var ErrH2loadOutput = errors.New("no h2load summary")

// H2loadSummary is what h2load's summary says of a run. h2load exits 0
// even when every request failed: read these, not its exit status.
type H2loadSummary struct {
	// Protocol is the application protocol it spoke ("h2c" for HTTP/2 with
	// prior knowledge, "http/1.1"); "" if it connected nowhere.
	Protocol string
	// Total through Timeout are the "requests:" line.
	Total, Started, Done, Succeeded, Failed, Errored, Timeout int
	// Status2xx through Status5xx are the "status codes:" line.
	Status2xx, Status3xx, Status4xx, Status5xx int
}

// RunH2load runs h2load with args (a URL among them; bound the run with -n
// and ctx) and returns its summary and whole output.
func RunH2load(ctx context.Context, args ...string) (H2loadSummary, string, error) {
	out, _, err := run(ctx, ToolH2load, args...)
	if err != nil {
		return H2loadSummary{}, out, err
	}
	s, err := ParseH2load(out)
	return s, out, err
}

// ParseH2load reads the summary of h2load's output:
//
//	Application protocol: h2c
//	requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout
//	status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx
func ParseH2load(out string) (H2loadSummary, error) {
	var s H2loadSummary
	requests := map[string]*int{
		"total": &s.Total, "started": &s.Started, "done": &s.Done, "succeeded": &s.Succeeded,
		"failed": &s.Failed, "errored": &s.Errored, "timeout": &s.Timeout,
	}
	statuses := map[string]*int{"2xx": &s.Status2xx, "3xx": &s.Status3xx, "4xx": &s.Status4xx, "5xx": &s.Status5xx}
	var sawRequests, sawStatuses bool
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		var err error
		switch {
		case strings.HasPrefix(line, "Application protocol:"):
			s.Protocol = strings.TrimSpace(strings.TrimPrefix(line, "Application protocol:"))
		case strings.HasPrefix(line, "requests:"):
			sawRequests = true
			err = parseCounts(strings.TrimPrefix(line, "requests:"), requests)
		case strings.HasPrefix(line, "status codes:"):
			sawStatuses = true
			err = parseCounts(strings.TrimPrefix(line, "status codes:"), statuses)
		}
		if err != nil {
			return H2loadSummary{}, fmt.Errorf("l7clients: h2load summary %q: %w", line, err)
		}
	}
	if !sawRequests || !sawStatuses {
		return H2loadSummary{}, fmt.Errorf("l7clients: h2load: %w (no requests: or status codes: line)", ErrH2loadOutput)
	}
	return s, nil
}

// parseCounts fills fields from "N name, N name, ..."; every field must be
// named once.
func parseCounts(list string, fields map[string]*int) error {
	seen := 0
	for item := range strings.SplitSeq(list, ",") {
		n, name, ok := strings.Cut(strings.TrimSpace(item), " ")
		if !ok {
			return fmt.Errorf("%w: item %q is not \"N name\"", ErrH2loadOutput, item)
		}
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 {
			return fmt.Errorf("%w: count %q of %s is not a number", ErrH2loadOutput, n, name)
		}
		p, known := fields[name]
		if !known {
			continue // a newer h2load may count more
		}
		*p = v
		seen++
	}
	if seen != len(fields) {
		return fmt.Errorf("%w: %d of %d counts present", ErrH2loadOutput, seen, len(fields))
	}
	return nil
}
