package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/meshwork/meshwork/bench/internal/agentproc"
	"github.com/meshwork/meshwork/bench/internal/cpuhost"
	"github.com/meshwork/meshwork/internal/freeport"
)

// The paths of a comparison: each mesh path, off and on.
const (
	pathL7Off = "L7 off"
	pathL7On  = "L7 on"
	pathL4Off = "L4 off"
	pathL4On  = "L4 on"
)

var comparePaths = []string{pathDirect, pathL7Off, pathL7On, pathL4Off, pathL4On}

// comparison is two meshes side by side in one run that differ in one
// feature: the "off" mesh runs without it, the "on" mesh with it. Each
// carries web-l7 and web-l4, and the loads take turns on the paths.
type comparison struct {
	flag                string // the flag that asks for it, such as -telemetry
	issue               int    // whose targets it checks
	setup               string // what off and on are, for the report
	offConfig, onConfig string // added to both agents' configuration
	offPolicy, onPolicy string // added to the policy
	targetP99           time.Duration
	targetCPU           float64 // more CPU per request, as a share
	// footer, when set, adds lines at the end of the report.
	footer func(w io.Writer)
}

// runComparison runs cmp's two meshes, each carrying web-l7 and web-l4 at
// -qps, in rounds in which the paths take turns, then the interleaved
// loads.
func runComparison(ctx context.Context, cmp comparison) error {
	if *rounds < 0 || (*rounds == 0 && *interleave <= 0) {
		return fmt.Errorf("%s needs -rounds of at least 1, or -rounds 0 with -interleave", cmp.flag)
	}
	if *same {
		cmp.offConfig, cmp.offPolicy = cmp.onConfig, cmp.onPolicy
	}
	fortio, err := findTool("fortio")
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("taskset is missing: scripts/deps.sh bench")
	}
	bin, err := agentproc.Binary(*binFlag)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "meshwork-bench-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	procs := &procSet{}
	defer procs.stopAll()
	a, b := cpuhost.Pair(*pin)
	a.Realtime, b.Realtime = *realtime, *realtime
	startLoad := loadAvg()

	httpPort, err := freeport.TCP("127.0.0.1")
	if err != nil {
		return err
	}
	appAddr := addr(httpPort)
	app, err := startApp(procs, b, work, appAddr)
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, appAddr); err != nil {
		return errors.Join(err, app.exited())
	}

	off := newMesh(bin, *serverIP, *clientIP, 243, cmp.offConfig)
	off.policy = cmp.offPolicy
	on := newMesh(bin, *onServerIP, *onClientIP, 245, cmp.onConfig)
	on.policy = cmp.onPolicy
	for _, m := range []*mesh{off, on} {
		defer m.stop()
		if err := m.start(ctx, a, b, work, httpPort, httpPort); err != nil {
			return err
		}
	}
	addrs := map[string]string{pathDirect: appAddr}
	for path, mv := range map[string]struct {
		m   *mesh
		svc string
	}{pathL7Off: {off, svcL7}, pathL7On: {on, svcL7}, pathL4Off: {off, svcL4}, pathL4On: {on, svcL4}} {
		ip, err := mv.m.vip(ctx, mv.svc)
		if err != nil {
			return err
		}
		addrs[path] = fmt.Sprintf("%s:%d", ip, httpPort)
	}
	for _, p := range comparePaths {
		if err := poll(ctx, 60*time.Second, "the "+p+" path", func() error {
			if err := errors.Join(app.exited(), off.alive(), on.alive()); err != nil {
				return err
			}
			return getBody(ctx, addrs[p])
		}); err != nil {
			return err
		}
	}
	pids := map[string]int{"app": app.pid()}
	for name, m := range map[string]*mesh{"off": off, "on": on} {
		for agent, pid := range m.pids() {
			pids[agent+" "+name] = pid
		}
	}
	fmt.Printf("bench/l7 %s: %s: load generator, client agents; %s: app, server agents\n", cmp.flag, a, b)
	for _, p := range comparePaths {
		fmt.Printf("  %-8s http://%s/\n", p, addrs[p])
	}
	if wait := *settle - time.Since(on.started); wait > 0 {
		fmt.Printf("settling for %s\n", wait.Round(time.Second))
		// Letting the agents' start-up memory settle before measuring;
		// not synchronisation.
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	lat := map[string][]*result{}
	for r := range *rounds {
		for _, p := range rotate(comparePaths, r) {
			fmt.Printf("round %d/%d: fortio %s\n", r+1, *rounds, p)
			res, err := measure(pids, func() (*result, error) { return fortioHTTP(ctx, a, fortio, work, "http://"+addrs[p]+"/") })
			if err != nil {
				return fmt.Errorf("fortio on the %s path: %w", p, err)
			}
			lat[p] = append(lat[p], res)
			if err := errors.Join(off.alive(), on.alive()); err != nil {
				return err
			}
		}
	}
	if *rounds > 0 {
		printComparison(os.Stdout, cmp, lat, startLoad, loadAvg())
	}
	if *interleave > 0 {
		// One phase per mesh path, so that each mesh's agents' CPU in a
		// phase is that path's.
		var phases []interleavePhase
		for _, paths := range [][]string{{pathDirect, pathL7Off, pathL7On}, {pathDirect, pathL4Off, pathL4On}} {
			fmt.Printf("interleaved load: %s, %d req/s each for %s\n", strings.Join(paths, ", "), *interleaveQPS, *interleave)
			s := startSampler(pids)
			il, cpu, err := interleaveLoad(ctx, a, addrs, paths, *interleaveQPS*len(paths), *interleave)
			use, _ := s.stop()
			if err != nil {
				return err
			}
			if err := errors.Join(off.alive(), on.alive()); err != nil {
				return err
			}
			phases = append(phases, interleavePhase{paths: paths, lat: il, use: use, loadCPU: cpu})
		}
		printInterleaved(os.Stdout, cmp, phases, startLoad, loadAvg())
	}
	return nil
}

// agentsPerThousand is the CPU seconds per 1,000 requests of a mesh's two
// agents together.
func agentsPerThousand(rs []*result, mesh string) float64 {
	return perThousand(rs, "client agent "+mesh) + perThousand(rs, "server agent "+mesh)
}

func printComparison(w io.Writer, cmp comparison, lat map[string][]*result, startLoad, endLoad string) {
	fmt.Fprintf(w, "\n## bench/l7 %s, %s\n\n", cmp.flag, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	if *same {
		fmt.Fprintf(w, "A/A run (-same): both meshes are set up as \"on\"; \"off\" is the first mesh\n\n")
	}
	fmt.Fprintf(w, "fortio load -qps %d -c %d -uniform=%t -t %s, 1 KiB answers, rounds: %d; %s\n\n", *qps, *conns, *uniform, *duration, *rounds, cmp.setup)
	t := table{w: w, paths: comparePaths}
	t.head("")
	t.row("requests (errors)", func(p string) string {
		n, e := sumRequests(lat[p])
		return fmt.Sprintf("%d (%d)", n, e)
	})
	for _, q := range []float64{50, 99, 99.9} {
		t.row(fmt.Sprintf("p%g ms", q), func(p string) string { return ms(pooled(lat[p], q)) })
	}
	t.row("p99 ms by round", func(p string) string { return byRound(lat[p], 99) })
	t.row("added p99 ms, median of rounds", func(p string) string {
		if p == pathDirect {
			return "—"
		}
		return ms(pairedAdded(lat[p], lat[pathDirect], 99))
	})
	mesh := func(p string) string {
		if p == pathL7On || p == pathL4On {
			return "on"
		}
		return "off"
	}
	for _, agent := range []string{"client agent", "server agent"} {
		t.row(agent+" CPU s per 1,000 req", func(p string) string {
			if p == pathDirect {
				return "—"
			}
			return fmt.Sprintf("%.3f", perThousand(lat[p], agent+" "+mesh(p)))
		})
	}
	t.row("rest of the machine, vCPU (stolen)", func(p string) string {
		v, s := others(lat[p])
		return fmt.Sprintf("%.2f (%.1f %%)", v, s*100)
	})
	if cmp.footer != nil {
		cmp.footer(w)
	}
	fmt.Fprintf(w, "load average (1, 5, 15 min): start %s; end %s\n", startLoad, endLoad)

	fmt.Fprintf(w, "\nissue %d's targets, on against off (informative):\n\n", cmp.issue)
	check := func(ok bool, format string, args ...any) {
		verdict := "FAIL"
		if ok {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "- %s %s\n", verdict, fmt.Sprintf(format, args...))
	}
	for _, pair := range [][2]string{{pathL7On, pathL7Off}, {pathL4On, pathL4Off}} {
		on, off := lat[pair[0]], lat[pair[1]]
		d := pairedAdded(on, off, 99)
		check(d <= cmp.targetP99, "%s: p99 %s ms more than %s, median of rounds; target ≤ %s ms", pair[0], ms(d), pair[1], ms(cmp.targetP99))
		cOn, cOff := agentsPerThousand(on, "on"), agentsPerThousand(off, "off")
		more := cOn/cOff - 1
		check(more <= cmp.targetCPU, "%s: agents' CPU %.3f s per 1,000 req against %.3f, %+.1f %%; target ≤ +%.0f %%", pair[0], cOn, cOff, more*100, cmp.targetCPU*100)
	}
	var errs int64
	for _, rs := range lat {
		_, e := sumRequests(rs)
		errs += e
	}
	check(errs == 0, "no failed request on any path: %d failed", errs)
}

// interleavePhase is one interleaved load: direct, a mesh path with
// telemetry off and the same with it on.
type interleavePhase struct {
	paths   []string // direct, off, on
	lat     map[string]pathLatencies
	use     map[string]usage
	loadCPU float64
}

// printInterleaved reports the interleaved loads: each path's exact
// percentiles, on against off, and the noise of those figures.
func printInterleaved(w io.Writer, cmp comparison, phases []interleavePhase, startLoad, endLoad string) {
	fmt.Fprintf(w, "\n## bench/l7 %s -interleave, %s\n\n", cmp.flag, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	if *same {
		fmt.Fprintf(w, "A/A run (-same): both meshes are set up as \"on\"; \"off\" is the first mesh\n\n")
	}
	fmt.Fprintf(w, "%s\n", cmp.setup)
	fmt.Fprintf(w, "per phase: %d req/s per path for %s, at each tick one request to each path at once, in random order; "+
		"%d connections per path; 1 KiB answers; real-time priority %d; exact percentiles of every request\n",
		*interleaveQPS, *interleave, *conns, *realtime)
	check := func(ok bool, format string, args ...any) {
		verdict := "FAIL"
		if ok {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "- %s %s\n", verdict, fmt.Sprintf(format, args...))
	}
	var errs int64
	for _, ph := range phases {
		il := ph.lat
		fmt.Fprintln(w)
		t := table{w: w, paths: ph.paths}
		t.head("")
		t.row("requests (errors)", func(p string) string {
			return fmt.Sprintf("%d (%d)", len(il[p].Micros), il[p].Errors)
		})
		for _, q := range []float64{50, 90, 99, 99.9} {
			t.row(fmt.Sprintf("p%g ms", q), func(p string) string { return ms(percentile(il[p].Micros, q)) })
		}
		t.row("p99 ms, even and odd requests", func(p string) string {
			e, o := halves(il[p])
			return ms(percentile(e, 99)) + " / " + ms(percentile(o, 99))
		})
		cpu := map[string]float64{}
		for _, m := range []string{"off", "on"} {
			cpu[m] = ph.use["client agent "+m].cpu + ph.use["server agent "+m].cpu
		}
		t.row("agents' CPU s per 1,000 req", func(p string) string {
			switch p {
			case pathDirect:
				return "—"
			case ph.paths[1]:
				return fmt.Sprintf("%.3f", cpu["off"]/float64(len(il[p].Micros))*1000)
			}
			return fmt.Sprintf("%.3f", cpu["on"]/float64(len(il[p].Micros))*1000)
		})
		fmt.Fprintf(w, "\nload generator CPU: %.1f s\n\n", ph.loadCPU)

		off, on := il[ph.paths[1]], il[ph.paths[2]]
		for _, q := range []float64{50, 99} {
			d := percentile(on.Micros, q) - percentile(off.Micros, q)
			spread := "no block"
			if q1, med, q3, err := quartiles(blockDiffs(on, off, q)); err == nil {
				spread = fmt.Sprintf("by %s block: median %s, quartiles %s to %s", interleaveBlock, ms(med), ms(q1), ms(q3))
			}
			if q == 99 {
				check(d <= cmp.targetP99, "%s: p99 %s ms more than %s (%s); target ≤ %s ms", ph.paths[2], ms(d), ph.paths[1], spread, ms(cmp.targetP99))
			} else {
				fmt.Fprintf(w, "- %s: p%g %s ms more than %s (%s)\n", ph.paths[2], q, ms(d), ph.paths[1], spread)
			}
		}
		cOn, cOff := cpu["on"]/float64(len(on.Micros)), cpu["off"]/float64(len(off.Micros))
		check(cOn/cOff-1 <= cmp.targetCPU, "%s: agents' CPU %+.1f %% against %s; target ≤ +%.0f %%", ph.paths[2], (cOn/cOff-1)*100, ph.paths[1], cmp.targetCPU*100)
		for _, l := range il {
			errs += l.Errors
		}
	}
	fmt.Fprintln(w)
	check(errs == 0, "no failed request on any path: %d failed", errs)
	if cmp.footer != nil {
		cmp.footer(w)
	}
	fmt.Fprintf(w, "load average (1, 5, 15 min): start %s; end %s\n", startLoad, endLoad)
}
