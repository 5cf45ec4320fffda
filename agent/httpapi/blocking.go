package httpapi

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// blockingSnapshot returns the catalog snapshot a read answers from and
// sets the index header. With ?index=N (N > 0) it waits until the catalog
// index passes N or ?wait (default Config.DefaultWait, capped at
// Config.MaxWait, plus up to 1/16 of jitter so that many watchers do not
// return in lockstep) has passed; on timeout it answers with the current
// snapshot, as Consul does. An index above the current one comes from an
// earlier life of this agent and is answered at once, so that the client
// starts over. ok is false when the request was answered (bad parameters)
// or abandoned by the client.
func (s *Server) blockingSnapshot(w http.ResponseWriter, r *http.Request) (*catalog.Snapshot, bool) {
	q := r.URL.Query()
	var index uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("query parameter \"index\": %q is not a non-negative integer", v))
			return nil, false
		}
		index = n
	}
	wait := s.cfg.DefaultWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("query parameter \"wait\": %q must be a duration such as \"30s\"", v))
			return nil, false
		}
		wait = min(d, s.cfg.MaxWait)
	}
	snap := s.deps.Catalog.Current()
	if index > 0 && index == snap.Index() && wait > 0 {
		wait += rand.N(wait/16 + 1)
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		s.metrics.blocking.Inc()
		snap, _ = s.deps.Catalog.Wait(ctx, index)
		s.metrics.blocking.Dec()
		cancel()
		if r.Context().Err() != nil && s.baseCtx.Err() == nil {
			return nil, false // the client went away
		}
	}
	w.Header().Set(api.IndexHeader, strconv.FormatUint(snap.Index(), 10))
	return snap, true
}
