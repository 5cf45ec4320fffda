package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func gbps(b float64) string { return fmt.Sprintf("%.2f Gbit/s", b/1e9) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// report prints the results as Markdown, ready for docs/benchmarks.md.
func report(paths []*path, raws, rawGROs, rawOnes []rawResult, floor hopFloor, ready readyLine, gso string) {
	direct := pathNamed(paths, "direct")
	raw, rawGRO, rawOne := medianRaw(raws), medianRaw(rawGROs), medianRaw(rawOnes)
	fmt.Println()
	fmt.Printf("Command: `go run ./bench/transport %s`\n\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("Latency at %d req/s, 1 KiB responses, %d keep-alive connections (fortio), %d rounds of %s per path, the paths taking turns; "+
		"p50, p90 and p99 are those of all the requests of a path's rounds together, and the paired column is the median over the rounds of the tunnel's p99 minus direct's in the same round:\n\n",
		*qps, *conns, *rounds, *latDur)
	fmt.Println("| path | p50 | p90 | p99 | p99 of the rounds | added p50 | added p90 | added p99 | added p99, paired rounds | req/s | errors | CPU stolen |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, p := range paths {
		if p.lat == nil {
			continue
		}
		add := func(d, base time.Duration) string {
			if direct == nil || direct.lat == nil || p == direct {
				return "—"
			}
			return ms(d - base)
		}
		var b50, b90, b99 time.Duration
		if direct != nil && direct.lat != nil {
			b50, b90, b99 = direct.lat.p50, direct.lat.p90, direct.lat.p99
		}
		paired := "—"
		if pa := p.lat.pairedAdded; pa != nil {
			paired = ms(pa[2])
		}
		fmt.Printf("| %s | %s | %s | %s | %.3f–%.3f ms | %s | %s | %s | %s | %.0f | %d | %.1f %% |\n", p.name,
			ms(p.lat.p50), ms(p.lat.p90), ms(p.lat.p99), msf(p.lat.p99Low), msf(p.lat.p99High),
			add(p.lat.p50, b50), add(p.lat.p90, b90), add(p.lat.p99, b99), paired, p.lat.qps, p.lat.errors, 100*p.lat.stolen)
	}
	if floor.trips > 0 {
		d, p := floor.direct, floor.proxied
		fmt.Printf("\nWake-up floor: one byte round a chain of processes over pipes, %d round trips 1 ms apart, the median of %d rounds (the processes do nothing but read and write):\n\n", floor.trips, *rounds)
		fmt.Println("| chain | p50 | p90 | p99 |")
		fmt.Println("|---|---|---|---|")
		fmt.Printf("| 2 processes, one on each host (the shape of direct) | %s | %s | %s |\n", ms(d.p50), ms(d.p90), ms(d.p99))
		fmt.Printf("| 4 processes, two on each host (a proxy at each end) | %s | %s | %s |\n", ms(p.p50), ms(p.p90), ms(p.p99))
		fmt.Printf("| added by the two idle forwarders | %s | %s | %s |\n", ms(p.p50-d.p50), ms(p.p90-d.p90), ms(p.p99-d.p99))
	}
	fmt.Printf("\nSingle-connection throughput, %d rounds of %s (iperf3, one TCP connection), the paths and raw quic-go taking turns; "+
		"each is its median round, and the paired column is the median over the rounds of the path's throughput over raw quic-go's in the same round:\n\n",
		*tputRounds, *tputDur)
	fmt.Println("| path | throughput | rounds | vs raw quic-go | paired rounds |")
	fmt.Println("|---|---|---|---|---|")
	for _, p := range paths {
		fmt.Printf("| %s | %s | %s | %.2f× | %.2f× |\n", p.name, gbps(p.tput), gbitList(p.tputs), p.tput/raw.bps, p.tputPaired)
	}
	fmt.Printf("| raw quic-go, one stream, sender on host A, receiver on host B (GSO %v) | %s | %s | 1.00× | |\n", raw.gso, gbps(raw.bps), rawRounds(raws))
	fmt.Printf("| raw quic-go likewise, on the tunnel's receive-offload sockets (GSO %v, GRO %v) | %s | %s | %.2f× | |\n",
		rawGRO.gso, rawGRO.gro, gbps(rawGRO.bps), rawRounds(rawGROs), rawGRO.bps/raw.bps)
	fmt.Printf("| raw quic-go, both ends in one unpinned process (reference) | %s | %s | %.2f× | |\n", gbps(rawOne.bps), rawRounds(rawOnes), rawOne.bps/raw.bps)
	fmt.Printf("\nRaw quic-go spent %.2f CPU s per GB (sender and receiver together), %.2f s on receive-offload sockets, %.2f s in one process.\n",
		raw.cpuPerGB, rawGRO.cpuPerGB, rawOne.cpuPerGB)
	fmt.Printf("\nNew TCP connections per second, %s, %d workers (connect, 1 byte each way, close):\n\n", *rateDur, *workers)
	fmt.Println("| path | connections/s | failures |")
	fmt.Println("|---|---|---|")
	for _, p := range paths {
		fmt.Printf("| %s | %.0f | %d |\n", p.name, p.rate, p.rateErrs)
	}
	fmt.Printf("\nResources of the two proxy processes of each path, from /proc: during the %d req/s run, and CPU per GB moved during the iperf3 run:\n\n", *qps)
	fmt.Println("| path | process | max RSS | mean RSS | CPU at 1000 req/s | CPU s per GB (iperf3) |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, p := range paths {
		names := make([]string, 0, len(p.pids))
		for n := range p.pids {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			lu, tu := p.latUse[n], p.tputUse[n]
			if lu == nil || tu == nil {
				continue
			}
			perGB := 0.0
			if gb := p.gigabytes(); gb > 0 {
				perGB = tu.cpuSeconds / gb
			}
			fmt.Printf("| %s | %s | %s | %s | %.1f%% of a core | %.2f |\n", p.name, n, mib(lu.maxRSS), mib(lu.avgRSS), 100*lu.cpu, perGB)
		}
	}
	fmt.Printf("\nClient agent: UDP buffers granted %d/%d bytes (as reported, doubled by Linux); %s; GRO %v.\n", ready.RcvBuf, ready.SndBuf, gso, ready.GRO)

	// Targets.
	fmt.Println()
	for _, p := range paths {
		if p.name != "mesh" {
			continue
		}
		if p.lat != nil && direct != nil && direct.lat != nil {
			const target = 500 * time.Microsecond
			// Two measures of what the tunnel adds: the pooled p99s apart,
			// and the median of the paired rounds. On a quiet machine they
			// agree; when they disagree about the target, the run decides
			// nothing.
			added := p.lat.p99 - direct.lat.p99
			var v string
			if pa := p.lat.pairedAdded; pa != nil {
				switch paired := pa[2]; {
				case added <= target && paired <= target:
					v = "met"
				case added > target && paired > target:
					v = fmt.Sprintf("NOT met (%s in the median of the paired rounds)", ms(paired))
				default:
					v = fmt.Sprintf("undecided in this run: %s in the median of the paired rounds", ms(paired))
				}
			}
			fmt.Printf("- added p99 %s (target ≤ 0.5 ms): %s\n", ms(added), v)
			if relay := pathNamed(paths, "relay"); relay != nil && relay.lat != nil {
				fmt.Printf("- a pair of plain TCP relays (HAProxy, no TLS, the least two proxies do) adds %s p99 in this run; the mesh adds %s more\n",
					ms(relay.lat.p99-direct.lat.p99), ms(p.lat.p99-relay.lat.p99))
			}
			if floor.trips > 0 {
				fmt.Printf("- two forwarding processes that do no work add %s p99 to a one-byte round trip here (wake-up floor)\n", ms(floor.proxied.p99-floor.direct.p99))
			}
		}
		// Two measures against raw quic-go: the median rounds apart, and
		// the median of the paired rounds; both must reach the target.
		fmt.Printf("- tunnel throughput %s = %.2f× raw quic-go across the same two hosts, %.2f× in the median of the paired rounds (targets ≥ 0.9× and ≥ 3 Gbit/s): %s; %.2f× raw quic-go in one process\n",
			gbps(p.tput), p.tput/raw.bps, p.tputPaired, verdict(p.tput >= 0.9*raw.bps && p.tputPaired >= 0.9 && p.tput >= 3e9), p.tput/rawOne.bps)
		if c, s := p.tputUse["client agent"], p.tputUse["server agent"]; c != nil && s != nil && p.gigabytes() > 0 {
			tunnel := (c.cpuSeconds + s.cpuSeconds) / p.gigabytes()
			fmt.Printf("- CPU per GB: both agents %.2f s, raw quic-go %.2f s: the tunnel costs %.2f× raw quic-go per byte\n",
				tunnel, raw.cpuPerGB, tunnel/raw.cpuPerGB)
		}
		if c, s := p.latUse["client agent"], p.latUse["server agent"]; c != nil && s != nil {
			worst := max(c.maxRSS, s.maxRSS)
			fmt.Printf("- agent RSS %s at %d req/s (target ≤ 40 MB): %s\n", mib(worst), *qps, verdict(worst <= 40e6))
		}
	}
}

// gigabytes is what the path moved in all its throughput rounds.
func (p *path) gigabytes() float64 {
	var bits float64
	for _, b := range p.tputs {
		bits += b * tputDur.Seconds()
	}
	return bits / 8 / 1e9
}

// gbitList lists throughput samples, in the order they were taken.
func gbitList(bps []float64) string {
	s := make([]string, len(bps))
	for i, b := range bps {
		s[i] = fmt.Sprintf("%.2f", b/1e9)
	}
	return strings.Join(s, ", ")
}

func rawRounds(rs []rawResult) string {
	bps := make([]float64, len(rs))
	for i, r := range rs {
		bps[i] = r.bps
	}
	return gbitList(bps)
}

// pathNamed is the path of that name among paths, or nil.
func pathNamed(paths []*path, name string) *path {
	for _, p := range paths {
		if p.name == name {
			return p
		}
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
