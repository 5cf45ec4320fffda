package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/testnet"
)

// memberStatus is how agent a's API shows node.
func memberStatus(ctx context.Context, c *api.Client, node string) (string, error) {
	ms, err := c.Members(ctx)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.Name == node {
			return m.Status, nil
		}
	}
	return "", fmt.Errorf("%s is not a member", node)
}

// TestLeaveAndForceLeaveThroughAPI runs a server and a client agent. The
// server refuses to force out the live client (409) and an unknown node
// (404); once the client dies without leaving and shows as failed, a
// force-leave makes it left. Then the server leaves through the API: it
// shows itself as left and asks its process to stop.
func TestLeaveAndForceLeaveThroughAPI(t *testing.T) {
	s, c, _ := serverAndClient(t, "127.238.0.0/16", "127.239.0.0/16", nil)
	ctx := context.Background()
	sc := api.NewClient(s.HTTPAddr())
	testnet.Eventually(t, wait, "s1 sees c1 alive", func() error {
		st, err := memberStatus(ctx, sc, "c1")
		if err == nil && st != string(catalog.StatusAlive) {
			err = fmt.Errorf("c1 is %s", st)
		}
		return err
	})

	var ae *api.Error
	err := sc.ForceLeave(ctx, "c1")
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || !strings.Contains(ae.Message, "alive") {
		t.Fatalf("force-leave of a live node: %v, want 409 saying it is alive", err)
	}
	if err := sc.ForceLeave(ctx, "nope"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("force-leave of an unknown node: %v, want 404", err)
	}

	c.Close() // dies without leaving
	testnet.Eventually(t, wait, "s1 sees c1 failed", func() error {
		st, err := memberStatus(ctx, sc, "c1")
		if err == nil && st != string(catalog.StatusFailed) {
			err = fmt.Errorf("c1 is %s", st)
		}
		return err
	})
	if err := sc.ForceLeave(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if st, err := memberStatus(ctx, sc, "c1"); err != nil || st != string(catalog.StatusLeft) {
		t.Fatalf("c1 is %s (%v) after force-leave, want left", st, err)
	}

	select {
	case <-s.LeaveRequested():
		t.Fatal("leave requested before anyone asked")
	default:
	}
	if err := sc.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.LeaveRequested():
	case <-time.After(wait):
		t.Fatal("the leave through the API did not ask the process to stop")
	}
	if st, err := memberStatus(ctx, sc, "s1"); err != nil || st != string(catalog.StatusLeft) {
		t.Fatalf("s1 shows itself %s (%v) after leaving, want left", st, err)
	}
	if err := sc.Leave(ctx); err != nil {
		t.Fatalf("a second leave: %v, want none", err)
	}
}
