package main

// The -catalog mode: how soon a restarted agent answers DNS for a remote
// service, with the catalog it saved when it stopped and without it
// (docs/restart.md, "State carried over").

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/meshwork/meshwork/agent/catalogstate"
	"github.com/meshwork/meshwork/agent/config"
)

// webAddr is the address the far agent registers web at: no socket, only
// the answer the near agent's DNS must give.
const webAddr = "10.61.0.7"

// startTimes are one start of the near agent, from the process's start.
type startTimes struct {
	dnsUp  time.Duration // first DNS answer of any kind
	answer time.Duration // first answer with web's address
}

// catalogRun starts a server agent "far" on farIP that runs web, and a
// client agent "near" on nearIP that joins it; then restarts near 2×rounds
// times, alternately with the catalog it saved when it stopped and with
// that file removed, and prints, for each, the time from the process's
// start to its DNS's first answer and to its first answer for
// web.service.mesh with web's address. It does it twice: with far up
// (near's gossip joins it at once), then with far stopped (near has no
// one to learn the catalog from; a start without the file is given
// downLimit to answer).
func catalogRun(bin, farIP, nearIP string, rounds int, downLimit time.Duration) (err error) {
	bin, err = filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-restart-catalog-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(dir)
		} else {
			err = fmt.Errorf("%w (logs in %s)", err, dir)
		}
	}()
	key := config.NewKey()
	far, err := startAgent(bin, dir, "far", fmt.Sprintf(
		"node: far\nserver: true\nbootstrap_expect: 1\nbind: %s\naddresses: {http: %s, dns: %s}\nports: {tunnel: -1}\n"+
			"cluster_key: %q\nlog_level: info\nservices:\n- {name: web, address: %s, port: 8080}\n",
		farIP, farIP, farIP, key, webAddr))
	if err != nil {
		return err
	}
	defer stopAgent(far)
	if _, err := firstAnswer(farIP, time.Now(), time.Minute); err != nil {
		return fmt.Errorf("far: %w", err)
	}

	near := nearAgent{bin: bin, dir: dir, conf: fmt.Sprintf("node: near\nbind: %s\naddresses: {http: %s, dns: %s}\nports: {tunnel: -1}\n"+
		"cluster_key: %q\nretry_join: [%q]\nlog_level: info\n", nearIP, nearIP, nearIP, key, farIP), ip: nearIP}
	state := filepath.Join(dir, "near", "data", catalogstate.FileName)
	// The first start, not counted, makes the file.
	if _, err := near.restart(state, "", false, 30*time.Second); err != nil {
		return err
	}
	fmt.Printf("near (client agent) restarted, far (server agent, runs web) on loopback; from the process's start to\n")
	fmt.Printf("%-36s %-32s %s\n", "", "its first DNS answer", "its first answer for web")
	up, err := near.rounds(state, "", rounds, 30*time.Second)
	if err != nil {
		return err
	}
	up.print("far up", 2*rounds)

	// far stops: near learns nothing from gossip. The file a start with
	// the catalog gets is the last one far-up saved, kept aside, since a
	// start without it saves near's lonely view at its stop.
	if err := stopAgent(far); err != nil {
		return fmt.Errorf("far: %w", err)
	}
	saved := state + ".far-up"
	b, err := os.ReadFile(state)
	if err != nil {
		return err
	}
	if err := os.WriteFile(saved, b, 0o600); err != nil {
		return err
	}
	down, err := near.rounds(state, saved, rounds, downLimit)
	if err != nil {
		return err
	}
	down.print("far down", 2*rounds)
	return nil
}

// nearAgent is the agent the -catalog mode restarts.
type nearAgent struct {
	bin, dir, conf, ip string
}

// results are the starts of one scenario.
type results struct {
	with, without []startTimes
	noAnswer      int // starts without the file that never answered
	limit         time.Duration
}

// rounds restarts the agent 2×n times, ABBA, with the file and without.
// With keep, the file is copied from keep before each start with it.
func (a nearAgent) rounds(state, keep string, n int, limit time.Duration) (results, error) {
	res := results{limit: limit}
	for i := range 2 * n {
		withFile := (i%2 == 0) == (i/2%2 == 0) // ABBA: neither kind always goes first
		st, err := a.restart(state, keep, withFile, limit)
		switch {
		case errors.Is(err, errNoAnswer) && !withFile:
			res.noAnswer++
		case err != nil:
			return res, fmt.Errorf("near, start %d: %w", i, err)
		case withFile:
			res.with = append(res.with, st)
		default:
			res.without = append(res.without, st)
		}
	}
	return res, nil
}

// restart starts the agent with its saved catalog (copied from keep when
// keep is set) or without it, waits for its first answer for web, and
// stops it.
func (a nearAgent) restart(state, keep string, withFile bool, limit time.Duration) (startTimes, error) {
	switch {
	case !withFile:
		if err := os.Remove(state); err != nil && !errors.Is(err, os.ErrNotExist) {
			return startTimes{}, err
		}
	case keep != "":
		b, err := os.ReadFile(keep)
		if err != nil {
			return startTimes{}, err
		}
		if err := os.WriteFile(state, b, 0o600); err != nil {
			return startTimes{}, err
		}
	}
	start := time.Now()
	p, err := startAgent(a.bin, a.dir, "near", a.conf)
	if err != nil {
		return startTimes{}, err
	}
	st, err := firstAnswer(a.ip, start, limit)
	if stopErr := stopAgent(p); stopErr != nil && err == nil {
		err = stopErr
	}
	if err != nil {
		return st, err
	}
	logged, _ := os.ReadFile(p.log)
	if got := strings.Contains(string(logged), "catalog restored from disk"); got != withFile {
		return st, fmt.Errorf("restored %v, want %v (log %s)", got, withFile, p.log)
	}
	return st, nil
}

func (r results) print(scenario string, starts int) {
	for _, k := range []struct {
		name string
		s    []startTimes
		none int
	}{{scenario + ", with the saved catalog", r.with, 0}, {scenario + ", without (file removed)", r.without, r.noAnswer}} {
		var up, ans []time.Duration
		for _, s := range k.s {
			up, ans = append(up, s.dnsUp), append(ans, s.answer)
		}
		line := fmt.Sprintf("%-36s p50 %-8s p90 %-8s max %-8s p50 %-8s p90 %-8s max %s", k.name,
			pct(up, 0.5), pct(up, 0.9), pct(up, 1), pct(ans, 0.5), pct(ans, 0.9), pct(ans, 1))
		if k.none > 0 {
			line = fmt.Sprintf("%-36s %d of %d starts: no answer for web within %s", k.name, k.none, starts/2, r.limit)
		}
		fmt.Println(line)
	}
}

type agentProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startAgent starts `meshwork agent` with conf in dir/name, its log
// appended to dir/name/agent.log.
func startAgent(bin, dir, name, conf string) (*agentProc, error) {
	home := filepath.Join(dir, name)
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	confPath := filepath.Join(home, "agent.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p := &agentProc{log: filepath.Join(home, "agent.log"), done: make(chan struct{})}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "agent", "--config", confPath, "--data-dir", filepath.Join(home, "data"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// stopAgent stops an agent as systemd does (SIGTERM), and kills it when
// it has not exited within 30 s.
func stopAgent(p *agentProc) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("did not exit within 30 s of SIGTERM")
	}
}

// errNoAnswer is firstAnswer's error when no right answer came in time.
var errNoAnswer = errors.New("no answer for web.service.mesh")

// firstAnswer asks ip:8600 for web.service.mesh every millisecond until
// the answer holds webAddr, for at most limit, and returns when the first
// answer of any kind and the first right one came, from start.
func firstAnswer(ip string, start time.Time, limit time.Duration) (startTimes, error) {
	var st startTimes
	c := &dns.Client{Net: "udp", Timeout: 100 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion("web.service.mesh.", dns.TypeA)
	server := net.JoinHostPort(ip, "8600")
	var last error
	for deadline := start.Add(limit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r, _, err := c.Exchange(q, server)
		if err != nil {
			last = err
			continue
		}
		if st.dnsUp == 0 {
			st.dnsUp = time.Since(start)
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok && a.A.String() == webAddr {
				st.answer = time.Since(start)
				return st, nil
			}
		}
		last = fmt.Errorf("answer %s without %s", dns.RcodeToString[r.Rcode], webAddr)
	}
	return st, fmt.Errorf("%w with %s within %s: %v", errNoAnswer, webAddr, limit, last)
}
