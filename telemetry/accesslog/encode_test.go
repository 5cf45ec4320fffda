package accesslog

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/meshwork/meshwork/transport/observe"
)

// decode parses one line strictly: a single JSON object, ending in the one
// newline, with no duplicate of a line break inside.
func decode(t testing.TB, line []byte) map[string]any {
	t.Helper()
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("line %q: want exactly one newline, at the end", line)
	}
	if !json.Valid(line) {
		t.Fatalf("line is not valid JSON: %q", line)
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %q: %v", line, err)
	}
	return m
}

func TestAppendStringEscapes(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"plain", "/v1/users?id=7", `"/v1/users?id=7"`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"newline injection", "x\n{\"status\":200}", `"x\n{\"status\":200}"`},
		{"controls", "\x00\x01\t\r\x1f\x7f", `"\u0000\u0001\t\r\u001f` + "\x7f" + `"`},
		{"utf-8 kept", "café ☕ 𝄞", `"café ☕ 𝄞"`},
		{"invalid bytes replaced one by one", "a\xff\xfeb", `"a\ufffd\ufffdb"`},
		{"truncated sequence", "\xe2\x98", `"\ufffd\ufffd"`},
		{"line separators", "a\u2028b\u2029c", `"a\u2028b\u2029c"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendString(nil, tc.in))
			if got != tc.want {
				t.Errorf("appendString(%q) = %s, want %s", tc.in, got, tc.want)
			}
			var back string
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatalf("%s does not parse: %v", got, err)
			}
			if want := string([]rune(tc.in)); back != want {
				t.Errorf("round trip: got %q, want %q", back, want)
			}
		})
	}
}

func TestTruncateKeepsCharactersWhole(t *testing.T) {
	long := strings.Repeat("é", maxField) // 2 bytes each
	got := truncate(long, maxField)
	if len(got) != maxField || !utf8.ValidString(got) {
		t.Errorf("truncate of %d bytes of é: %d bytes, valid %v", len(long), len(got), utf8.ValidString(got))
	}
	odd := "a" + long
	got = truncate(odd, maxField)
	if len(got) != maxField-1 || !utf8.ValidString(got) {
		t.Errorf("truncate at a split é: %d bytes, valid %v, want %d valid", len(got), utf8.ValidString(got), maxField-1)
	}
	line := appendLine(nil, &observe.Call{Path: strings.Repeat("/a", 10*maxField), GRPCStatus: -1})
	m := decode(t, line)
	if p := m["path"].(string); len(p) != maxField {
		t.Errorf("a 20 KiB path logged as %d bytes, want %d", len(p), maxField)
	}
}

func TestAppendTimeMatchesTheLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	times := []time.Time{{}, start, time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}
	for range 10000 {
		times = append(times, time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)).In(time.FixedZone("x", int(r.Int64N(50000))-25000)))
	}
	for _, tm := range times {
		if got, want := string(appendTime(nil, tm)), tm.UTC().Format(timeLayout); got != want {
			t.Fatalf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	}
}

func TestAppendMillis(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                          "0.000",
		1500 * time.Nanosecond:     "0.001",
		12345678 * time.Nanosecond: "12.345",
		3 * time.Second:            "3000.000",
		-time.Second:               "0.000",
	} {
		if got := string(appendMillis(nil, d)); got != want {
			t.Errorf("appendMillis(%v) = %s, want %s", d, got, want)
		}
	}
}

// FuzzLine feeds hostile strings into every string field of a Call and
// checks that the line is one valid JSON object whose fields read back as
// what was logged: the value itself, cut to maxField at a character
// boundary, with each invalid byte as U+FFFD.
func FuzzLine(f *testing.F) {
	f.Add("GET", "api.service.mesh", "/v1/users?id=1", "curl/8.5.0", "req-1", "web", "denied", int64(200), int64(7))
	f.Add("POST", "a\"b", "/\x00\n\r\t\\", "\xff\xfe\xfd", "\u2028\u2029", "café", "", int64(-1), int64(0))
	f.Add("", "", strings.Repeat("\xe2\x98\x83", 2000), strings.Repeat("\x1b[31m", 100), "", "", "no_healthy_instance", int64(503), int64(1<<40))
	f.Add("PUT", "[::1]:8080", "/%2e%2e/", "Mozilla/5.0 (X11; Linux x86_64)", "}{", "{\"x\":1}", "timeout", int64(0), int64(-5))
	f.Fuzz(func(t *testing.T, method, authority, path, ua, reqID, source, meshErr string, status, bytesIn int64) {
		c := &observe.Call{
			Direction:   observe.Inbound,
			Protocol:    observe.HTTP,
			Start:       time.Unix(1700000000, 123456789),
			Duration:    time.Duration(bytesIn),
			Source:      source,
			Destination: authority,
			Method:      method,
			Authority:   authority,
			Path:        path,
			UserAgent:   ua,
			RequestID:   reqID,
			MeshError:   meshErr,
			Status:      int(status % 1000),
			GRPCStatus:  -1,
			BytesIn:     bytesIn,
			BytesOut:    status,
			Attempts:    int(status % 4),
		}
		line := appendLine(nil, c)
		m := decode(t, line)
		for key, in := range map[string]string{
			"method": method, "authority": authority, "path": path, "user_agent": ua,
			"request_id": reqID, "source": source, "destination": authority, "mesh_error": meshErr,
		} {
			got, present := m[key]
			if in == "" {
				if present {
					t.Errorf("%s: empty value logged as %q", key, got)
				}
				continue
			}
			cut := truncate(in, maxField)
			if !strings.HasPrefix(in, cut) || len(cut) > maxField || (len(in) > maxField && len(cut) < maxField-3) {
				t.Fatalf("%s: truncate(%d bytes) = %d bytes, not a prefix within 3 bytes of %d", key, len(in), len(cut), maxField)
			}
			if want := string([]rune(cut)); got != want {
				t.Errorf("%s: logged %q, want %q", key, got, want)
			}
		}
		if c.Status > 0 {
			if got := m["status"].(json.Number).String(); got != itoa(int64(c.Status)) {
				t.Errorf("status %s, want %d", got, c.Status)
			}
		} else if _, ok := m["status"]; ok {
			t.Errorf("status %d logged", c.Status)
		}
		if got := m["bytes_received"].(json.Number).String(); got != itoa(max(bytesIn, 0)) {
			t.Errorf("bytes_received %s, want %d", got, max(bytesIn, 0))
		}
		if got := m["result"]; got != string(c.Result()) {
			t.Errorf("result %v, want %s", got, c.Result())
		}
	})
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
