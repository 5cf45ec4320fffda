package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc.
const clockTicks = 100

// usage is what one process used during one load.
type usage struct {
	cpu    float64 // CPU seconds (user + system)
	maxRSS int64   // largest VmRSS sampled, KiB
}

// machineUse is what the whole machine did during one load, from
// /proc/stat: the CPU seconds spent busy (all CPUs) and stolen by the
// hypervisor, over the wall time.
type machineUse struct {
	busy, steal, wall float64
}

// sampler reads utime+stime of some processes at its start and stop, and
// their VmRSS every 200 ms in between, with the machine's CPU times.
type sampler struct {
	pids   map[string]int
	cpu0   map[string]int64
	rss    map[string]int64
	m0     cpuStat
	start  time.Time
	stopc  chan struct{}
	donec  chan struct{}
	result map[string]usage
	mach   machineUse
}

func startSampler(pids map[string]int) *sampler {
	s := &sampler{pids: pids, cpu0: map[string]int64{}, rss: map[string]int64{},
		stopc: make(chan struct{}), donec: make(chan struct{}), start: time.Now(), m0: readCPUStat()}
	for name, pid := range pids {
		s.cpu0[name], _ = cpuTicks(pid)
	}
	go func() {
		defer close(s.donec)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sampleRSS()
			select {
			case <-tick.C:
			case <-s.stopc:
				return
			}
		}
	}()
	return s
}

func (s *sampler) sampleRSS() {
	for name, pid := range s.pids {
		if kb, err := vmRSS(pid); err == nil && kb > s.rss[name] {
			s.rss[name] = kb
		}
	}
}

// stop ends the sampling and returns each process's usage and the
// machine's.
func (s *sampler) stop() (map[string]usage, machineUse) {
	close(s.stopc)
	<-s.donec
	s.sampleRSS()
	m1 := readCPUStat()
	out := map[string]usage{}
	for name, pid := range s.pids {
		t, _ := cpuTicks(pid)
		out[name] = usage{cpu: float64(t-s.cpu0[name]) / clockTicks, maxRSS: s.rss[name]}
	}
	return out, machineUse{
		busy:  float64(m1.busy-s.m0.busy) / clockTicks,
		steal: float64(m1.steal-s.m0.steal) / clockTicks,
		wall:  time.Since(s.start).Seconds(),
	}
}

// cpuTicks reads utime+stime of pid.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(string(b))
}

// parseStatTicks takes utime+stime from a /proc/<pid>/stat line. The
// command name may hold spaces and parentheses: the fields start after the
// last ')'.
func parseStatTicks(s string) (int64, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no ')' after the command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want 13 or more", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat: %w", err)
	}
	return ut + st, nil
}

// vmRSS reads VmRSS of pid in KiB.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/<pid>/status")
}

// cpuStat is the all-CPU line of /proc/stat, in ticks.
type cpuStat struct {
	busy, steal int64
}

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseCPUStat(line)
}

// parseCPUStat reads "cpu user nice system idle iowait irq softirq steal
// guest guest_nice": busy is everything but idle, iowait and steal (guest
// time is already in user); steal is the time the hypervisor gave to
// other guests.
func parseCPUStat(line string) cpuStat {
	f := strings.Fields(line)
	var s cpuStat
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	for i, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		switch i {
		case 3, 4: // idle, iowait
		case 7:
			s.steal = n
		default:
			s.busy += n
		}
	}
	return s
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
