package gossip

import (
	"bytes"
	"log"
	"log/slog"
	"strings"
	"testing"
)

func TestParseMemberlistLine(t *testing.T) {
	tests := []struct {
		in    string
		level slog.Level
		text  string
	}{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4:5", slog.LevelDebug, "Stream connection from=1.2.3.4:5"},
		{"[INFO] memberlist: Marking x as failed", slog.LevelInfo, "Marking x as failed"},
		{"[WARN] memberlist: Refuting a suspect message (from: b)", slog.LevelWarn, "Refuting a suspect message (from: b)"},
		{"[ERR] memberlist: Failed to send gossip", slog.LevelError, "Failed to send gossip"},
		{"[ERROR] memberlist: Failed to compress payload", slog.LevelError, "Failed to compress payload"},
		{"Err: Could not set the deadline: x", slog.LevelError, "Could not set the deadline: x"},
		{"something odd", slog.LevelWarn, "something odd"},
	}
	for _, tc := range tests {
		lvl, text := parseMemberlistLine(tc.in)
		if lvl != tc.level || text != tc.text {
			t.Errorf("parse(%q) = %v %q, want %v %q", tc.in, lvl, text, tc.level, tc.text)
		}
	}
}

// TestClassifyMemberlistLines pins the memberlist v0.7 wording this package
// depends on: if an upgrade rewords these lines, this test fails.
func TestClassifyMemberlistLines(t *testing.T) {
	tests := []struct {
		line string
		want mlEvent
		ok   bool
	}{
		{"[INFO] memberlist: Suspect node-7 has failed, no acks received", mlEvent{kind: evSuspect, node: "node-7"}, true},
		{"[WARN] memberlist: Refuting a suspect message (from: node-2)", mlEvent{kind: evRefute}, true},
		{"[WARN] memberlist: Refuting a dead message (from: node-2)", mlEvent{kind: evRefute}, true},
		{"[ERR] memberlist: failed to receive: no installed keys could decrypt the message from=127.0.0.1:4000", mlEvent{kind: evDecrypt}, true},
		{"[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=127.0.0.1:4000", mlEvent{kind: evDecrypt}, true},
		{"[ERR] memberlist: failed to receive: encryption is configured but remote state is not encrypted from=x", mlEvent{kind: evDecrypt}, true},
		{"[INFO] memberlist: Marking node-7 as failed, suspect timeout reached (2 peer confirmations)", mlEvent{}, false},
	}
	for _, tc := range tests {
		var got []mlEvent
		var out bytes.Buffer
		w := &logWriter{log: slog.New(slog.NewTextHandler(&out, nil)), onEvent: func(e mlEvent) { got = append(got, e) }}
		log.New(w, "", 0).Print(tc.line)
		if tc.ok != (len(got) == 1) || (tc.ok && got[0] != tc.want) {
			t.Errorf("%q: events %+v, want %+v (ok=%v)", tc.line, got, tc.want, tc.ok)
		}
		if tc.want.kind == evDecrypt && !strings.Contains(out.String(), "not encrypted with a key in this node's keyring") {
			t.Errorf("%q: logged %q, want the plain-words key mismatch message", tc.line, out.String())
		}
	}
}
