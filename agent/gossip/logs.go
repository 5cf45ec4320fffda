package gossip

import (
	"context"
	"log/slog"
	"strings"
)

// mlEventKind is a memberlist state change that memberlist reports only in
// its log.
type mlEventKind int

const (
	// evSuspect: this node's probe of Node failed (direct, indirect and TCP)
	// and memberlist now suspects it.
	evSuspect mlEventKind = iota + 1
	// evRefute: memberlist refuted a suspect or dead message about this node.
	evRefute
	// evDecrypt: a packet or stream could not be decrypted with any key of
	// the keyring, or encryption is on at one end only.
	evDecrypt
)

type mlEvent struct {
	kind mlEventKind
	node string
}

// logWriter adapts memberlist's *log.Logger output to slog. memberlist
// writes one line per call, "[LEVEL] memberlist: text"; the level becomes
// the slog level and the text a "detail" attribute. The few lines that are
// memberlist's only report of a state change also go to onEvent.
//
// Write is called by memberlist's goroutines, sometimes while memberlist
// holds its node lock: onEvent must not call back into memberlist.
type logWriter struct {
	log     *slog.Logger
	onEvent func(mlEvent)
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	level, text := parseMemberlistLine(line)
	if ev, ok := classifyLine(text); ok {
		if ev.kind == evDecrypt {
			// Say it in plain words: this is the line an operator sees when
			// an agent with another key tries to talk to this one.
			w.log.Error("gossip message refused: it is not encrypted with a key in this node's keyring",
				"detail", text,
				"hint", "the sender's gossip encryption key does not match; compare `meshwork keyring list` on both agents")
		} else {
			w.log.Log(context.Background(), level, "memberlist", "detail", text)
		}
		if w.onEvent != nil {
			w.onEvent(ev)
		}
		return len(p), nil
	}
	w.log.Log(context.Background(), level, "memberlist", "detail", text)
	return len(p), nil
}

// parseMemberlistLine splits "[LEVEL] memberlist: text" into a slog level
// and the text. Lines without a recognised level are warnings: memberlist
// uses bare prefixes such as "Err:" for problems.
func parseMemberlistLine(line string) (slog.Level, string) {
	level := slog.LevelWarn
	rest := line
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			switch line[1:end] {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			rest = strings.TrimSpace(line[end+1:])
		}
	} else if strings.HasPrefix(line, "Err:") {
		level = slog.LevelError
		rest = strings.TrimSpace(strings.TrimPrefix(line, "Err:"))
	}
	rest = strings.TrimPrefix(rest, "memberlist: ")
	return level, rest
}

// classifyLine recognises the memberlist v0.7 log lines that carry a state
// change. TestClassifyMemberlistLines pins their wording.
func classifyLine(text string) (mlEvent, bool) {
	if name, ok := strings.CutPrefix(text, "Suspect "); ok {
		if name, ok = strings.CutSuffix(name, " has failed, no acks received"); ok {
			return mlEvent{kind: evSuspect, node: name}, true
		}
	}
	if strings.HasPrefix(text, "Refuting a suspect message") || strings.HasPrefix(text, "Refuting a dead message") {
		return mlEvent{kind: evRefute}, true
	}
	if isKeyMismatch(text) {
		return mlEvent{kind: evDecrypt}, true
	}
	return mlEvent{}, false
}

// isKeyMismatch reports whether a memberlist error text means that the two
// ends do not share a gossip encryption key (or only one encrypts).
func isKeyMismatch(text string) bool {
	t := strings.ToLower(text)
	return strings.Contains(t, "no installed keys could decrypt") ||
		strings.Contains(t, "decrypt packet failed") ||
		strings.Contains(t, "remote state is encrypted and encryption is not configured") ||
		strings.Contains(t, "encryption is configured but remote state is not encrypted")
}
