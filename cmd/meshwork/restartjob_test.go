package main

import (
	"errors"
	"testing"
)

func TestUnitOfCgroup(t *testing.T) {
	for _, tc := range []struct {
		cgroup, want string
		err          error
	}{
		{"0::/system.slice/meshwork.service\n", "meshwork.service", nil},
		// cgroup v1 lines first, the unified hierarchy last.
		{"12:pids:/system.slice/meshwork.service\n1:name=systemd:/system.slice/meshwork.service\n0::/system.slice/meshwork.service\n", "meshwork.service", nil},
		// A unit with a delegated subtree.
		{"0::/system.slice/meshwork@a.service/payload\n", "meshwork@a.service", nil},
		{"0::/user.slice/user-1000.slice/session-3.scope\n", "", errNoUnit},
		{"", "", errNoUnit},
		{"garbage", "", errNoUnit},
	} {
		got, err := unitOfCgroup([]byte(tc.cgroup))
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("unitOfCgroup(%q) = %q, %v; want %q, %v", tc.cgroup, got, err, tc.want, tc.err)
		}
	}
}

func TestHasRestartJob(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want bool
	}{
		// systemd 252, during `systemctl restart meshwork`.
		{"2381 meshwork.service restart running\n", true},
		{"2381 meshwork.service stop running\n", false},
		// Another unit's restart says nothing of this one.
		{"17 other.service restart waiting\n2381 meshwork.service stop running\n", false},
		{"  2381 meshwork.service restart running\n", true},
		{"", false},
		{"meshwork.service restart\n", false},
	} {
		if got := hasRestartJob([]byte(tc.out), "meshwork.service"); got != tc.want {
			t.Errorf("hasRestartJob(%q) = %v, want %v", tc.out, got, tc.want)
		}
	}
}
