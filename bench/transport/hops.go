package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/bench/internal/cpuhost"
)

// The wake-up floor: what it costs on this machine only to pass a request
// through two more processes, one on each cpuhost.Host, when they do no work at
// all. One byte goes round a chain of processes over pipes, 1 ms between
// round trips as at 1,000 req/s: origin (host A) and echo (host B) is the
// shape of a direct connection; origin, forwarder (A), forwarder (B) and
// echo is the shape of any design with a proxy at each end. The forwarders
// make plain blocking read and write calls and nothing else, so whatever
// the second chain adds is the machine's cost of waking two processes each
// way, not a proxy's.

// hopResult is the round-trip percentiles of one chain.
type hopResult struct{ p50, p90, p99 time.Duration }

// hopFloor is the median over the rounds of both chains.
type hopFloor struct {
	direct, proxied hopResult
	trips           int
}

// measureHops runs both chains for rounds rounds, in turns.
func measureHops(ctx context.Context, self string, a, b cpuhost.Host, trips, rounds int) (hopFloor, error) {
	var direct, proxied []hopResult
	for r := range rounds {
		for _, forwarders := range []bool{r%2 == 1, r%2 == 0} {
			res, err := runChain(ctx, self, a, b, trips, forwarders)
			if err != nil {
				return hopFloor{}, err
			}
			if forwarders {
				proxied = append(proxied, res)
			} else {
				direct = append(direct, res)
			}
		}
	}
	return hopFloor{direct: medianHops(direct), proxied: medianHops(proxied), trips: trips}, nil
}

// medianHops is the median of each percentile over the rounds.
func medianHops(rs []hopResult) hopResult {
	med := func(get func(hopResult) time.Duration) time.Duration {
		v := make([]time.Duration, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return hopResult{
		p50: med(func(r hopResult) time.Duration { return r.p50 }),
		p90: med(func(r hopResult) time.Duration { return r.p90 }),
		p99: med(func(r hopResult) time.Duration { return r.p99 }),
	}
}

// runChain starts one chain, lets the origin make its round trips and
// waits for every process of it to end.
func runChain(ctx context.Context, self string, a, b cpuhost.Host, trips int, forwarders bool) (hopResult, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(trips)*5*time.Millisecond+30*time.Second)
	defer cancel()
	// links[i] joins member i and i+1: a pipe each way.
	type link struct{ fwdR, fwdW, backR, backW *os.File }
	members := []cpuhost.Host{a, b}
	roles := []string{"hop-origin", "hop-echo"}
	if forwarders {
		members = []cpuhost.Host{a, a, b, b}
		roles = []string{"hop-origin", "hop-forward", "hop-forward", "hop-echo"}
	}
	links := make([]link, len(members)-1)
	var all []*os.File
	defer func() {
		for _, f := range all {
			f.Close()
		}
	}()
	for i := range links {
		var l link
		var err error
		if l.fwdR, l.fwdW, err = blockingPipe(); err == nil {
			l.backR, l.backW, err = blockingPipe()
		}
		if err != nil {
			return hopResult{}, err
		}
		all = append(all, l.fwdR, l.fwdW, l.backR, l.backW)
		links[i] = l
	}
	var cmds []*exec.Cmd
	var originOut strings.Builder
	for i, h := range members {
		// Each member's files, as fds 3, 4, ...: what it reads from its
		// left and writes to its left, then the same to its right.
		var files []*os.File
		if i > 0 {
			files = append(files, links[i-1].fwdR, links[i-1].backW)
		}
		if i < len(links) {
			files = append(files, links[i].fwdW, links[i].backR)
		}
		bin, args := h.Command(self, "-role", roles[i], "-hops", strconv.Itoa(trips))
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.ExtraFiles = files
		cmd.Stderr = os.Stderr
		if i == 0 {
			cmd.Stdout = &originOut
		}
		if err := cmd.Start(); err != nil {
			return hopResult{}, fmt.Errorf("start %s: %w", roles[i], err)
		}
		cmds = append(cmds, cmd)
	}
	// Only the children hold the pipes now, so that an end propagates.
	for _, f := range all {
		f.Close()
	}
	all = nil
	var firstErr error
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", roles[i], err)
		}
	}
	if firstErr != nil {
		return hopResult{}, firstErr
	}
	var ns [3]int64
	if _, err := fmt.Sscanf(strings.TrimSpace(originOut.String()), "HOPS %d %d %d", &ns[0], &ns[1], &ns[2]); err != nil {
		return hopResult{}, fmt.Errorf("hop origin said %q: %w", originOut.String(), err)
	}
	return hopResult{p50: time.Duration(ns[0]), p90: time.Duration(ns[1]), p99: time.Duration(ns[2])}, nil
}

// blockingPipe is a pipe whose ends stay in blocking mode, so that the
// children's reads sleep in the kernel as a C program's would.
func blockingPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "hop-r"), os.NewFile(uintptr(fds[1]), "hop-w"), nil
}

// The child roles. Their fds: origin 3 (write right), 4 (read right);
// forwarder 3 (read left), 4 (write left), 5 (write right), 6 (read
// right); echo 3 (read left), 4 (write left). A member that sees its
// input end, ends.

func runHopRole(role string, trips int) error {
	var b [1]byte
	move := func(from, to int) (bool, error) {
		n, err := syscall.Read(from, b[:])
		if n == 0 || err != nil {
			return false, err
		}
		_, err = syscall.Write(to, b[:])
		return err == nil, err
	}
	switch role {
	case "hop-echo":
		for {
			if ok, err := move(3, 4); !ok {
				return err
			}
		}
	case "hop-forward":
		for {
			if ok, err := move(3, 5); !ok {
				return err
			}
			if ok, err := move(6, 4); !ok {
				return err
			}
		}
	case "hop-origin":
		rtts := make([]time.Duration, trips)
		for i := range rtts {
			start := time.Now()
			if _, err := syscall.Write(3, b[:]); err != nil {
				return err
			}
			if n, err := syscall.Read(4, b[:]); n != 1 {
				return fmt.Errorf("round trip %d: read %d bytes: %v", i, n, err)
			}
			rtts[i] = time.Since(start)
			time.Sleep(time.Millisecond)
		}
		slices.Sort(rtts)
		at := func(q float64) int64 { return int64(rtts[int(q*float64(len(rtts)-1))]) }
		fmt.Printf("HOPS %d %d %d\n", at(0.50), at(0.90), at(0.99))
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}
