package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// systemd's SIGTERM does not say whether a start follows. The agent asks
// systemd which job it runs on the agent's unit: during `systemctl
// restart`, and an Ansible `state: restarted`, the unit's job is of type
// "restart" while the stop runs, and the sockets the agent keeps in the
// unit's file descriptor store are handed to the next start
// (docs/restart.md). It asks through systemctl, which speaks D-Bus to
// systemd, because this module has no D-Bus client (godbus is not in go.mod
// and its module is not on the module mirror the project builds from);
// list-jobs is a read that needs no privilege.

// restartJobTimeout bounds the question: a slow or absent D-Bus counts as
// a stop, the safe answer, which leaves the cluster first.
const restartJobTimeout = time.Second

// errNoUnit is returned when the process's cgroup names no systemd service.
var errNoUnit = errors.New("restart job: the process runs in no systemd service")

// systemdRestartQueued reports whether systemd is stopping this process's
// service as part of a restart job.
func systemdRestartQueued(ctx context.Context) (bool, error) {
	cgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return false, fmt.Errorf("restart job: %w", err)
	}
	unit, err := unitOfCgroup(cgroup)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, restartJobTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", "list-jobs", "--no-legend", "--no-pager", "--plain", unit).Output()
	if err != nil {
		return false, fmt.Errorf("restart job: systemctl list-jobs %s: %w", unit, err)
	}
	return hasRestartJob(out, unit), nil
}

// unitOfCgroup returns the service unit named by the innermost path of
// /proc/self/cgroup, such as meshwork.service for
// "0::/system.slice/meshwork.service".
func unitOfCgroup(cgroup []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(cgroup))
	for sc.Scan() {
		// hierarchy-ID:controllers:path; the unified hierarchy is "0::".
		_, path, ok := strings.Cut(sc.Text(), "::")
		if !ok {
			continue
		}
		for _, elem := range strings.Split(path, "/") {
			if strings.HasSuffix(elem, ".service") {
				// The innermost service wins: a unit's own cgroup may
				// have children, never a service inside a service.
				return elem, nil
			}
		}
	}
	return "", errNoUnit
}

// hasRestartJob reports whether the output of `systemctl list-jobs
// --no-legend` lists a restart job for unit. Each line is "ID UNIT TYPE
// STATE".
func hasRestartJob(listJobs []byte, unit string) bool {
	sc := bufio.NewScanner(bytes.NewReader(listJobs))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[1] == unit && f[2] == "restart" {
			return true
		}
	}
	return false
}
