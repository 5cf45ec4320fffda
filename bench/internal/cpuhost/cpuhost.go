// Package cpuhost splits this machine into the two "hosts" a benchmark's
// paths span: A (load generators, client side) and B (services, server
// side), each on half of the CPUs with taskset, so that the two ends of a
// path do not take each other's CPU, as on two machines.
package cpuhost

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Host is one of the two hosts.
type Host struct {
	Name string
	CPUs string // taskset CPU list; empty: unpinned
	// Realtime is the SCHED_FIFO priority of the processes run on h, so
	// that other work on the machine (builds, tests) cannot preempt them
	// and land in their latency's tail; 0: the normal scheduler. Linux
	// keeps 5 % of each CPU for other tasks (sched_rt_runtime_us).
	Realtime int
}

// Pair returns A and B: with pin on a machine of two CPUs or more, A gets
// the lower half of them and B the upper half.
func Pair(pin bool) (a, b Host) {
	a, b = Host{Name: "A"}, Host{Name: "B"}
	if n := runtime.NumCPU(); pin && n >= 2 {
		a.CPUs, b.CPUs = cpuRange(0, n/2-1), cpuRange(n/2, 2*(n/2)-1)
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

// Command returns the command line that runs bin with args on h.
func (h Host) Command(bin string, args ...string) (string, []string) {
	if h.CPUs != "" {
		bin, args = "taskset", append([]string{"-c", h.CPUs, bin}, args...)
	}
	if h.Realtime > 0 {
		bin, args = "chrt", append([]string{"-f", strconv.Itoa(h.Realtime), bin}, args...)
	}
	return bin, args
}

// PinRunning moves every thread of a running process onto h's CPUs.
// It gives them h's real-time priority too.
func (h Host) PinRunning(ctx context.Context, pid int) error {
	if h.CPUs != "" {
		if out, err := exec.CommandContext(ctx, "taskset", "-a", "-p", "-c", h.CPUs, strconv.Itoa(pid)).CombinedOutput(); err != nil {
			return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", h.CPUs, pid, err, out)
		}
	}
	if h.Realtime > 0 {
		if out, err := exec.CommandContext(ctx, "chrt", "-a", "-f", "-p", strconv.Itoa(h.Realtime), strconv.Itoa(pid)).CombinedOutput(); err != nil {
			return fmt.Errorf("chrt -a -f -p %d %d: %v: %s", h.Realtime, pid, err, out)
		}
	}
	return nil
}

func (h Host) String() string {
	switch {
	case h.CPUs == "":
		return "host " + h.Name + " (unpinned)"
	case strings.Contains(h.CPUs, "-"):
		return fmt.Sprintf("host %s (CPUs %s)", h.Name, h.CPUs)
	}
	return fmt.Sprintf("host %s (CPU %s)", h.Name, h.CPUs)
}
