//go:build e2e

package netns

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// waitForLeaves waits until each agent holds a leaf certificate that names
// every service of its host in holds.
func waitForLeaves(t *testing.T, agents []*Agent, holds map[*Host][]string) {
	t.Helper()
	for _, a := range agents {
		want := holds[a.Host]
		Eventually(t, 90*time.Second, a.Host.Name+" holds a leaf naming "+strings.Join(want, ", "), func() error {
			var l leafInfo
			if err := a.JSON(&l, "ca", "cert"); err != nil {
				return err
			}
			for _, s := range want {
				if !contains(l.IDs, "spiffe://meshwork.local/svc/"+s) {
					return fmt.Errorf("leaf names %v", l.IDs)
				}
			}
			return nil
		})
	}
}

// applyPolicy applies src through via and waits until every agent holds
// the policy at the index of the change.
func applyPolicy(t *testing.T, via *Agent, agents []*Agent, src string) {
	t.Helper()
	out, err := applyFile(t, via, src)
	if err != nil {
		t.Fatalf("policy apply: %v", err)
	}
	for _, a := range agents {
		Eventually(t, 30*time.Second, fmt.Sprintf("%s holds the policy at index %d", a.Host.Name, out.Index), func() error {
			st, err := policyStatus(a)
			if err != nil {
				return err
			}
			if st.Index < out.Index {
				return fmt.Errorf("index %d", st.Index)
			}
			return nil
		})
	}
}
