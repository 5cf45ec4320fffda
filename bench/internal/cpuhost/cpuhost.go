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
	if h.CPUs == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", h.CPUs, bin}, args...)
}

// PinRunning moves every thread of a running process onto h's CPUs.
func (h Host) PinRunning(ctx context.Context, pid int) error {
	if h.CPUs == "" {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "taskset", "-a", "-p", "-c", h.CPUs, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", h.CPUs, pid, err, out)
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
