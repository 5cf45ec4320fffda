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
	"time"
)

// ErrSuccessorFailed is returned by StartSuccessor when the new process
// exited, or did not say it was ready in time. The caller keeps serving: it
// still holds every socket.
var ErrSuccessorFailed = errors.New("sockets: successor did not become ready")

// StartSuccessor starts cmd with every open socket of the set (Files) from
// descriptor 3 on, named in HandoffFDsEnv, and a pipe on which the new
// process calls SignalReady once it serves. It returns once it has, and the
// caller may then stop accepting and drain. When the successor exits first,
// or ctx ends, StartSuccessor kills it and returns an error wrapping
// ErrSuccessorFailed; the caller still holds its sockets and serves on.
//
// cmd's ExtraFiles must be empty; its Env, when nil, is this process's.
// Once it is ready, the successor is the caller's to Wait for or Release.
func (s *Set) StartSuccessor(ctx context.Context, cmd *exec.Cmd) error {
	if len(cmd.ExtraFiles) != 0 {
		return errors.New("sockets: start successor: cmd has ExtraFiles already")
	}
	files, err := s.Files()
	if err != nil {
		return fmt.Errorf("sockets: start successor: %w", err)
	}
	defer func() {
		for _, nf := range files {
			nf.File.Close()
		}
	}()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sockets: start successor: ready pipe: %w", err)
	}
	defer readyR.Close()

	names := make([]string, len(files))
	for i, nf := range files {
		names[i] = nf.Name
		cmd.ExtraFiles = append(cmd.ExtraFiles, nf.File)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, readyW)
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	env = withoutEnv(env, HandoffFDsEnv, HandoffReadyEnv, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
	cmd.Env = append(env,
		HandoffFDsEnv+"="+strings.Join(names, ":"),
		HandoffReadyEnv+"="+strconv.Itoa(firstFD+len(files)),
	)
	err = cmd.Start()
	readyW.Close() // the successor holds the write end; EOF means it is gone
	if err != nil {
		return fmt.Errorf("sockets: start successor %s: %w", cmd.Path, err)
	}

	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := io.ReadFull(readyR, b[:])
		ready <- err
	}()
	select {
	case err = <-ready:
		if err == nil {
			return nil
		}
		err = fmt.Errorf("%w: it exited before it was ready", ErrSuccessorFailed)
	case <-ctx.Done():
		err = fmt.Errorf("%w: %w", ErrSuccessorFailed, ctx.Err())
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return err
}

// IsSuccessor reports whether the process was started by StartSuccessor and
// has not yet said it is ready.
func (s *Set) IsSuccessor() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readyFD != nil
}

// SignalReady tells the predecessor that started this process, if any, that
// it serves on the sockets it inherited, so that the predecessor stops
// accepting. It is a no-op after the first call and in a process no
// predecessor started.
func (s *Set) SignalReady() error {
	s.mu.Lock()
	f := s.readyFD
	s.readyFD = nil
	s.mu.Unlock()
	if f == nil {
		return nil
	}
	defer f.Close()
	_ = f.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := f.Write([]byte{1}); err != nil {
		return fmt.Errorf("sockets: signal ready: %w", err)
	}
	return nil
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
