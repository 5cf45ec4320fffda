package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/gossip"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// monitorBuffer is how many log lines a monitor holds for a reader that is
// behind before it drops lines.
const monitorBuffer = 512

// agentOpsRoutes mounts leave and force-leave (when the agent gave its
// membership) and the monitor (when it gave its log).
func (s *Server) agentOpsRoutes() {
	if s.deps.Membership != nil {
		s.handle("PUT /v1/agent/leave", acl.Require(acl.ResourceAgent, "", acl.Write), s.agentLeave)
		s.handle("PUT /v1/agent/force-leave/{node}", acl.RequireOnPath(acl.ResourceNode, "node", acl.Write), s.agentForceLeave)
	}
	if s.deps.Logs != nil {
		s.handle("GET /v1/agent/monitor", acl.Require(acl.ResourceAgent, "", acl.Read), s.agentMonitor)
	}
}

func (s *Server) agentLeave(w http.ResponseWriter, r *http.Request) {
	// A client that hangs up must not cut the leave short; the agent
	// bounds it.
	s.log.Info("leave requested through the API", "remote", r.RemoteAddr)
	if err := s.deps.Membership.Leave(context.WithoutCancel(r.Context())); err != nil {
		httpjson.Error(w, http.StatusInternalServerError, fmt.Errorf("the graceful leave failed (the agent stops all the same; others will see it fail): %w", err))
		return
	}
	httpjson.Write(w, http.StatusOK, struct{}{})
}

func (s *Server) agentForceLeave(w http.ResponseWriter, r *http.Request) {
	node, err := pathValue(r, "node")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	err = s.deps.Membership.ForceLeave(node)
	switch {
	case err == nil:
		httpjson.Write(w, http.StatusOK, struct{}{})
	case errors.Is(err, gossip.ErrUnknownMember):
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("no member %q is known to this agent", node))
	case errors.Is(err, gossip.ErrMemberAlive):
		httpjson.Error(w, http.StatusConflict, fmt.Errorf("%s: force-leave is only for a failed node; a live node leaves with `meshwork leave` run against it", strings.TrimPrefix(err.Error(), "gossip: force leave ")))
	default:
		s.localError(w, err)
	}
}

// agentMonitor streams the agent's log lines at ?loglevel= (default info)
// and above, as text, until the client goes away or the server closes. A
// reader that falls behind loses lines, never the agent time: each loss is
// reported in the stream with its count.
func (s *Server) agentMonitor(w http.ResponseWriter, r *http.Request) {
	level := slog.LevelInfo
	if v := r.URL.Query().Get("loglevel"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("query parameter \"loglevel\": %q: want debug, info, warn or error", v))
			return
		}
	}
	sub := s.deps.Logs.Subscribe(level, monitorBuffer)
	defer sub.Close()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	var reported uint64
	// send writes one line, after a line that says how many were dropped
	// since the last one written, if any were.
	send := func(line []byte) bool {
		if d := sub.Dropped(); d > reported {
			s.metrics.dropped.Add(float64(d - reported))
			if _, err := fmt.Fprintf(w, "[monitor] %d log lines dropped: this reader is too slow\n", d-reported); err != nil {
				return false
			}
			reported = d
		}
		_, err := w.Write(line)
		return err == nil
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case line := <-sub.Lines():
			if !send(line) {
				return
			}
		}
		// Send what is queued in one flush.
	queued:
		for {
			select {
			case line := <-sub.Lines():
				if !send(line) {
					return
				}
			default:
				break queued
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}
