package sockets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The handoff runs in two steps, so that the predecessor gives up what only
// one process may hold (the gossip and Raft ports, Raft's files) only once
// the successor has shown that it loads its configuration:
//
//	predecessor                          successor
//	StartSuccessor ───── exec ─────────▶ Inherit (reads connections from here on), load, build
//	                ◀──── 'P' ────────── AwaitStart: prepared, waits
//	release exclusive resources
//	SendConns ── connections, end ─────▶ (buffered for TakeConns)
//	Successor.Start ───── 'G' ─────────▶ start, claim the sockets
//	                ◀──── 'R' ────────── SignalReady: serving
//	MAINPID= to systemd
//	Successor.Handover ── 'M' ─────────▶ AwaitHandover: the main process
//	stop accepting, drain, exit
//
// Both processes serve the shared sockets between 'R' and the moment the
// predecessor closes its listeners; connections that arrive then go to
// either, and none is refused. The last step matters under systemd, which
// takes notifications (READY=1, WATCHDOG=1, FDSTORE=1) from the service's
// main process only: the successor sends them once the predecessor has
// named it the main process.
const (
	msgPrepared = 'P'
	msgGo       = 'G'
	msgReady    = 'R'
	msgHandover = 'M'
)

// ErrSuccessorFailed is returned when the new process exited, or did not
// reach the next step in time. It has been killed; the caller still holds
// every socket.
var ErrSuccessorFailed = errors.New("sockets: successor failed")

// Successor is a process started by StartSuccessor that has inherited the
// sockets and prepared itself, and waits for Start.
type Successor struct {
	proc *os.Process
	goW  *os.File
	msgs chan byte // from the successor; closed at EOF
	once sync.Once

	// connsW is this process's side of the socket connections travel on
	// (SendConns); nil once closed. connsUsed is set by SendConns.
	connsMu   sync.Mutex
	connsW    *os.File
	connsUsed bool
	// helloErr is whether the successor said it takes connections,
	// read once (TakesConns, SendConns).
	helloOnce sync.Once
	helloErr  error
}

// StartSuccessor starts the program cmd describes (Path, Args, Env, Dir,
// and Stdin, Stdout and Stderr, which must be nil or *os.File) with every
// open socket of the set (Files) from descriptor 3 on, named in
// HandoffFDsEnv, the two pipes of the handoff and the socket of SendConns
// (HandoffConnsEnv). It returns once the new process is prepared
// (AwaitStart), and then the caller releases what only one process may
// hold, sends the connections it carries (SendConns) and calls
// Successor.Start. When the successor exits
// first, or ctx ends, StartSuccessor kills it and returns an error wrapping
// ErrSuccessorFailed. cmd is not started with its Start method: see
// startProcess.
func (s *Set) StartSuccessor(ctx context.Context, cmd *exec.Cmd) (*Successor, error) {
	if len(cmd.ExtraFiles) != 0 {
		return nil, errors.New("sockets: start successor: cmd has ExtraFiles already")
	}
	files, err := s.Files()
	if err != nil {
		return nil, fmt.Errorf("sockets: start successor: %w", err)
	}
	defer func() {
		for _, nf := range files {
			nf.File.Close()
		}
	}()
	upR, upW, err := os.Pipe() // successor to predecessor
	if err != nil {
		return nil, fmt.Errorf("sockets: start successor: pipe: %w", err)
	}
	goR, goW, err := os.Pipe() // predecessor to successor
	if err != nil {
		upR.Close()
		upW.Close()
		return nil, fmt.Errorf("sockets: start successor: pipe: %w", err)
	}
	connsW, connsR, err := connPair() // predecessor to successor
	if err != nil {
		upR.Close()
		upW.Close()
		goR.Close()
		goW.Close()
		return nil, fmt.Errorf("sockets: start successor: socketpair: %w", err)
	}

	names := make([]string, len(files))
	extra := make([]*os.File, 0, len(files)+3)
	for i, nf := range files {
		names[i] = nf.Name
		extra = append(extra, nf.File)
	}
	extra = append(extra, upW, goR, connsR)
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	// WATCHDOG_PID names this process: systemd's watchdog is the
	// successor's once it is the main process, and without the variable
	// sd_watchdog_enabled(3) applies WATCHDOG_USEC to whoever reads it.
	env = withoutEnv(env, HandoffFDsEnv, HandoffReadyEnv, HandoffGoEnv, HandoffConnsEnv, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID")
	env = append(env,
		HandoffFDsEnv+"="+strings.Join(names, ":"),
		HandoffReadyEnv+"="+strconv.Itoa(firstFD+len(files)),
		HandoffGoEnv+"="+strconv.Itoa(firstFD+len(files)+1),
		HandoffConnsEnv+"="+strconv.Itoa(firstFD+len(files)+2),
	)
	proc, err := startProcess(cmd, env, extra)
	// The successor holds its ends: EOF on upR means it is gone.
	upW.Close()
	goR.Close()
	connsR.Close()
	if err != nil {
		upR.Close()
		goW.Close()
		connsW.Close()
		return nil, fmt.Errorf("sockets: start successor %s: %w", cmd.Path, err)
	}
	p := &Successor{proc: proc, goW: goW, msgs: make(chan byte, 2), connsW: connsW}
	go func() {
		defer upR.Close()
		defer close(p.msgs)
		var b [1]byte
		for {
			if _, err := io.ReadFull(upR, b[:]); err != nil {
				return
			}
			p.msgs <- b[0]
		}
	}()
	if err := p.await(ctx, msgPrepared); err != nil {
		return nil, err
	}
	return p, nil
}

// Start lets the successor start and returns once it serves (SignalReady).
// It first closes the socket of SendConns, so that the successor has every
// connection before it starts. On an error, which wraps
// ErrSuccessorFailed, the successor has been killed.
func (p *Successor) Start(ctx context.Context) error {
	p.closeConns()
	if _, err := p.goW.Write([]byte{msgGo}); err != nil {
		p.Abort()
		return fmt.Errorf("%w: %w", ErrSuccessorFailed, err)
	}
	return p.await(ctx, msgReady)
}

// Handover tells the ready successor that it is now the main process:
// under systemd, after this process sent MAINPID= with its PID. It closes
// this process's end of the pipe; call it once, after Start.
func (p *Successor) Handover() error {
	_, err := p.goW.Write([]byte{msgHandover})
	if cerr := p.goW.Close(); err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sockets: handover: %w", err)
	}
	return nil
}

// await waits for msg from the successor, and kills it when that fails.
func (p *Successor) await(ctx context.Context, msg byte) error {
	var err error
	select {
	case got, ok := <-p.msgs:
		switch {
		case !ok:
			err = fmt.Errorf("%w: it exited before it was %s", ErrSuccessorFailed, stepName(msg))
		case got != msg:
			err = fmt.Errorf("%w: it sent %q, want %q", ErrSuccessorFailed, got, msg)
		default:
			return nil
		}
	case <-ctx.Done():
		err = fmt.Errorf("%w: not %s: %w", ErrSuccessorFailed, stepName(msg), ctx.Err())
	}
	p.Abort()
	return err
}

func stepName(msg byte) string {
	if msg == msgPrepared {
		return "prepared"
	}
	return "ready"
}

// Abort kills the successor and waits for it.
func (p *Successor) Abort() {
	p.once.Do(func() {
		p.closeConns()
		p.goW.Close()
		_ = p.proc.Kill()
		_, _ = p.proc.Wait()
	})
}

// Process is the successor's process. Once it is ready it runs on its own:
// the caller may Release it, or Wait for it in a test.
func (p *Successor) Process() *os.Process { return p.proc }

// Wait waits for the successor to exit; for tests and tools that started
// it and outlive it.
func (p *Successor) Wait() error {
	p.closeConns()
	p.goW.Close()
	st, err := p.proc.Wait()
	if err == nil && !st.Success() {
		err = &exec.ExitError{ProcessState: st}
	}
	return err
}

// IsSuccessor reports whether the process was started by StartSuccessor and
// has not yet said it is ready.
func (s *Set) IsSuccessor() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readyW != nil
}

// AwaitStart tells the predecessor that this process is prepared: it has
// inherited the sockets and loaded its configuration. It then waits until
// the predecessor has released what only one process may hold, and returns
// nil, or until ctx ends or the predecessor is gone, and returns an error:
// the process then exits without serving. It returns nil at once in a
// process no predecessor started.
func (s *Set) AwaitStart(ctx context.Context) error {
	s.mu.Lock()
	up, goR := s.readyW, s.goR
	s.goR = nil
	s.handoverR = goR // read again by AwaitHandover
	s.mu.Unlock()
	if up == nil || goR == nil {
		return nil
	}
	if _, err := up.Write([]byte{msgPrepared}); err != nil {
		return fmt.Errorf("sockets: await start: %w", err)
	}
	got := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := io.ReadFull(goR, b[:])
		if err == nil && b[0] != msgGo {
			err = fmt.Errorf("got %q, want %q", b[0], msgGo)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("sockets: await start: predecessor: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sockets: await start: %w", ctx.Err())
	}
}

// AwaitHandover waits, after SignalReady, until the predecessor says that
// this process is the main one (Successor.Handover), and returns nil. It
// returns an error when the predecessor exited without saying so, or ctx
// ended: under systemd the process is then not the service's main process
// and its notifications are refused. It returns nil at once in a process
// no predecessor started, and on any call but the first.
func (s *Set) AwaitHandover(ctx context.Context) error {
	s.mu.Lock()
	r := s.handoverR
	s.handoverR = nil
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	got := make(chan error, 1)
	go func() {
		defer r.Close()
		var b [1]byte
		_, err := io.ReadFull(r, b[:])
		if err == nil && b[0] != msgHandover {
			err = fmt.Errorf("got %q, want %q", b[0], msgHandover)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("sockets: await handover: predecessor: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sockets: await handover: %w", ctx.Err())
	}
}

// SignalReady tells the predecessor that started this process, if any,
// that it serves on the sockets it inherited, so that the predecessor stops
// accepting and drains. It is a no-op after the first call and in a
// process no predecessor started.
func (s *Set) SignalReady() error {
	s.mu.Lock()
	up := s.readyW
	s.readyW = nil
	s.mu.Unlock()
	if up == nil {
		return nil
	}
	defer up.Close()
	if _, err := up.Write([]byte{msgReady}); err != nil {
		return fmt.Errorf("sockets: signal ready: %w", err)
	}
	return nil
}

// startProcess starts cmd's program with extra as descriptors 3 on. It
// does not use os.StartProcess (nor exec.Cmd.Start, which calls it):
// that takes each file's descriptor with Fd, which clears O_NONBLOCK on
// the open file description a duplicate shares with this process's
// socket. Until it was set again, this process's reads and accepts would
// block in the kernel, past deadlines and Close. syscall.StartProcess
// takes the descriptors as numbers and changes no flag.
func startProcess(cmd *exec.Cmd, env []string, extra []*os.File) (*os.Process, error) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()
	var files []*os.File
	for _, std := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		switch f := std.(type) {
		case nil:
			files = append(files, devNull)
		case *os.File:
			files = append(files, f)
		default:
			return nil, fmt.Errorf("stdin, stdout and stderr must be files or nil, not %T", std)
		}
	}
	files = append(files, extra...)
	// The numbers are valid while files are open, which they are until
	// this returns; Control does not touch the flags as Fd does.
	fds := make([]uintptr, len(files))
	for i, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, err
		}
		if err := rc.Control(func(fd uintptr) { fds[i] = fd }); err != nil {
			return nil, err
		}
	}
	argv := cmd.Args
	if len(argv) == 0 {
		argv = []string{cmd.Path}
	}
	pid, _, err := syscall.StartProcess(cmd.Path, argv, &syscall.ProcAttr{Dir: cmd.Dir, Env: env, Files: fds})
	if err != nil {
		return nil, err
	}
	return os.FindProcess(pid)
}

// withoutEnv returns env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
