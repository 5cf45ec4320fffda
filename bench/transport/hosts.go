package main

import (
	"fmt"
	"strings"
	"time"
)

// await reads the child's stdout up to a line starting with prefix and
// returns the rest of that line.
func (p *proc) await(prefix string, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		for {
			l, err := p.out.ReadString('\n')
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
				got <- result{line: strings.TrimSpace(rest)}
				return
			}
			if err != nil {
				got <- result{err: fmt.Errorf("%s ended before %q: %w", p.name, prefix, err)}
				return
			}
		}
	}()
	select {
	case r := <-got:
		return r.line, r.err
	case <-time.After(timeout):
		return "", fmt.Errorf("%s: no %q after %s", p.name, prefix, timeout)
	}
}
