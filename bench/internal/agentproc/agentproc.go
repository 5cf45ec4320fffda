// Package agentproc runs meshwork agents as processes for the benchmarks
// that measure a real agent (bench/agent, bench/policycaps): each on its own
// copy of the executable, with its log in a file, and its memory read from
// /proc.
package agentproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Binary returns the absolute path of the release binary. A missing one is
// an error rather than built here: the figures are those of the release
// build (make build: its tags leave out smallstep's databases and KMSes,
// which changes the resident memory).
func Binary(path string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w (run make build first)", err)
	}
	return filepath.Abs(path)
}

// Proc is an agent process this program started.
type Proc struct {
	Name string
	Log  string // path of its combined output
	Cmd  *exec.Cmd
	done chan struct{}
}

// Start writes config to <dir>/<name>.yaml and runs `meshwork agent` on it.
//
// Each agent runs its own copy of the executable, as it would on its own
// host. Sharing one file would share its page-cache pages between the
// processes, count them in every RSS figure, and keep the agent's release
// of its executable pages (MADV_PAGEOUT skips pages that another process
// maps) from taking effect.
func Start(bin, dir, name, config string) (*Proc, error) {
	conf := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		return nil, err
	}
	own := filepath.Join(dir, name+"-meshwork")
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(own, b, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(own, "agent", "--config", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{Name: name, Log: logPath, Cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports an agent that stopped before the measurement, with the end
// of its log.
func (p *Proc) Exited() error {
	b, _ := os.ReadFile(p.Log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return fmt.Errorf("the %s agent exited:\n%s", p.Name, b)
}

// Stop ends the agent, by its PID: an interrupt, then a kill after 20 s.
func (p *Proc) Stop() {
	_ = p.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// WaitFor polls cond every 200 ms until it holds or d passes.
func WaitFor(d time.Duration, what string, cond func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// LastLine is the last non-empty line of s, trimmed.
func LastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// Memory returns a process's VmRSS and VmHWM in KiB.
func Memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc/<pid>/status")
	}
	return rss, hwm, nil
}
