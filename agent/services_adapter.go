package agent

import (
	"context"
	"slices"
	"sync"

	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
)

// localService is one local service as agent/local reports it.
type localService = api.AgentService

// serviceSync hands the local services to the components that follow them
// (the certificate's service names, the data plane's definitions) at start
// and after every change agent/local publishes. Sinks are called from one
// goroutine, in the order they were added, and must not block; each keeps
// its own last value to skip publications that changed nothing it uses
// (health changes, for instance).
type serviceSync struct {
	local *local.Manager
	sinks []func([]localService)

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func newServiceSync(lm *local.Manager) *serviceSync { return &serviceSync{local: lm} }

// add registers a sink; only before start.
func (s *serviceSync) add(sink func([]localService)) { s.sinks = append(s.sinks, sink) }

// start pushes the current services to every sink, then follows changes
// until close.
func (s *serviceSync) start(context.Context) error {
	changed := s.local.Changed()
	s.push()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			// Take the next channel before reading, so that no change is missed.
			changed = s.local.Changed()
			s.push()
		}
	}()
	return nil
}

func (s *serviceSync) push() {
	svcs := s.local.Services()
	for _, sink := range s.sinks {
		sink(svcs)
	}
}

// close stops following changes and waits for the goroutine. Idempotent.
func (s *serviceSync) close() error {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
			<-s.done
		}
	})
	return nil
}

// buildServiceSync makes the follower of the local services; the CA and the
// tunnel add their sinks to it.
func (a *Agent) buildServiceSync() error {
	a.services = newServiceSync(a.local)
	a.add("services", a.services.start, a.services.close)
	return nil
}

// serviceNames returns the distinct names of svcs, sorted: the services a
// leaf names.
func serviceNames(svcs []localService) []string {
	names := make([]string, 0, len(svcs))
	for _, s := range svcs {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
