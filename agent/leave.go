package agent

import (
	"context"
	"fmt"
)

// apiMembership is the agent's side of PUT /v1/agent/leave and
// /v1/agent/force-leave: httpapi.Membership.
type apiMembership struct{ a *Agent }

// Leave leaves the cluster gracefully and then asks the process to stop
// (LeaveRequested), whether or not the leave completed: an operator who
// asked the agent to leave wants it gone.
func (m apiMembership) Leave(ctx context.Context) error {
	a := m.a
	a.mu.Lock()
	first := !a.apiLeave
	a.apiLeave = true
	a.mu.Unlock()
	if !first {
		return nil // a leave through the API is under way or done
	}
	defer close(a.leaveRequested)
	a.log.Info("leaving the cluster: asked through the API")
	if err := a.Leave(ctx); err != nil {
		return fmt.Errorf("agent: leave: %w", err)
	}
	return nil
}

// ForceLeave marks a failed node as left.
func (m apiMembership) ForceLeave(node string) error { return m.a.gossip.ForceLeave(node) }

// LeaveRequested is closed once the agent has left the cluster because the
// API asked it to: the process then drains and closes it, as after
// SIGTERM, without leaving a second time.
func (a *Agent) LeaveRequested() <-chan struct{} { return a.leaveRequested }
