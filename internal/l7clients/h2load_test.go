package l7clients

import (
	"errors"
	"testing"
)

// ok is h2load 1.52's output for a run that succeeded.
const ok = `starting benchmark...
spawning thread #0: 4 total client(s). 200 total requests
Application protocol: h2c
progress: 100% done

finished in 19.64ms, 10184.86 req/s, 319.27KB/s
requests: 200 total, 200 started, 200 done, 199 succeeded, 1 failed, 0 errored, 0 timeout
status codes: 199 2xx, 0 3xx, 1 4xx, 0 5xx
traffic: 6.27KB (6420) total, 976B (976) headers (space savings 94.86%), 1.56KB (1600) data
`

// refused is its output when nothing listened.
const refused = `starting benchmark...
spawning thread #0: 1 total client(s). 10 total requests

finished in 673us, 0.00 req/s, 0B/s
requests: 10 total, 0 started, 0 done, 0 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
`

func TestParseH2load(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want H2loadSummary
	}{
		{"succeeded", ok, H2loadSummary{Protocol: "h2c", Total: 200, Started: 200, Done: 200, Succeeded: 199, Failed: 1, Status2xx: 199, Status4xx: 1}},
		{"refused", refused, H2loadSummary{Total: 10, Failed: 10, Errored: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseH2load(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseH2loadRejects(t *testing.T) {
	for _, tc := range []struct{ name, out string }{
		{"empty", ""},
		{"no statuses", "requests: 1 total, 1 started, 1 done, 1 succeeded, 0 failed, 0 errored, 0 timeout\n"},
		{"no requests", "status codes: 1 2xx, 0 3xx, 0 4xx, 0 5xx\n"},
		{"count missing", "requests: 1 total, 1 started\nstatus codes: 1 2xx, 0 3xx, 0 4xx, 0 5xx\n"},
		{"not a number", "requests: x total, 1 started, 1 done, 1 succeeded, 0 failed, 0 errored, 0 timeout\nstatus codes: 1 2xx, 0 3xx, 0 4xx, 0 5xx\n"},
		{"no name", "requests: 1\nstatus codes: 1 2xx, 0 3xx, 0 4xx, 0 5xx\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseH2load(tc.out); !errors.Is(err, ErrH2loadOutput) {
				t.Errorf("err = %v, want ErrH2loadOutput", err)
			}
		})
	}
}

func TestParseListening(t *testing.T) {
	for _, tc := range []struct {
		line string
		port int
		ok   bool
	}{
		{"INFO: 2025/12/07 06:40:00 [interop] interop server listening on [::]:41234", 41234, true},
		{"interop server listening on 127.0.0.1:8080", 8080, true},
		{"interop server listening on [::]:0", 0, false},
		{"interop server listening on nowhere", 0, false},
		{"[core] something else", 0, false},
	} {
		port, ok := parseListening(tc.line)
		if port != tc.port || ok != tc.ok {
			t.Errorf("parseListening(%q) = %d, %v; want %d, %v", tc.line, port, ok, tc.port, tc.ok)
		}
	}
}
