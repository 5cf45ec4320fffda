package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// host is one of the two machines a path spans: A runs the load generator
// and the client-side proxy, B the services and the server-side proxy.
// With -pin each host is half of this machine's CPUs, so that the two
// ends of a tunnel do not take each other's CPU, as on two machines.
type host struct {
	name string
	cpus string // taskset CPU list; empty: unpinned
}

// hosts returns A and B. When pin is set and this machine has two CPUs or
// more, A gets the lower half of them and B the upper half.
func hosts(pin bool) (a, b host) {
	a, b = host{name: "A"}, host{name: "B"}
	if n := runtime.NumCPU(); pin && n >= 2 {
		a.cpus, b.cpus = cpuRange(0, n/2-1), cpuRange(n/2, n/2+n/2-1)
	}
	return a, b
}

// cpuRange is a taskset CPU list from first to last.
func cpuRange(first, last int) string {
	if first == last {
		return strconv.Itoa(first)
	}
	return fmt.Sprintf("%d-%d", first, last)
}

// command returns the command line that runs bin with args on h.
func (h host) command(bin string, args ...string) (string, []string) {
	if h.cpus == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", h.cpus, bin}, args...)
}

func (h host) String() string {
	if h.cpus == "" {
		return "host " + h.name + " (unpinned)"
	}
	if strings.Contains(h.cpus, "-") {
		return fmt.Sprintf("host %s (CPUs %s)", h.name, h.cpus)
	}
	return fmt.Sprintf("host %s (CPU %s)", h.name, h.cpus)
}

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
