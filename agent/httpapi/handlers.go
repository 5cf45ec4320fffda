package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/httpjson"
)

func (s *Server) routesInit() {
	agentRead := acl.Require(acl.ResourceAgent, "", acl.Read)
	checkWrite := acl.CheckedInHandler("service:write on the check's service (node:write on the node for a node check)")
	s.handle("GET /v1/agent/self", agentRead, s.agentSelf)
	s.handle("GET /v1/agent/members", acl.CheckedInHandler("node:read on each member: the list is filtered"), s.agentMembers)
	s.handle("GET /v1/agent/services", acl.CheckedInHandler("service:read on each service: the list is filtered"), s.agentServices)
	s.handle("GET /v1/agent/service/{id}", acl.CheckedInHandler("service:read on the service the ID names"), s.agentService)
	s.handle("PUT /v1/agent/service/register", acl.CheckedInHandler("service:write on the body's service name (and on the name of a service it replaces)"), s.agentRegister)
	s.handle("PUT /v1/agent/service/deregister/{id}", acl.CheckedInHandler("service:write on the service the ID names"), s.agentDeregister)
	s.handle("GET /v1/agent/checks", acl.CheckedInHandler("service:read on each check's service (node:read for node checks): the list is filtered"), s.agentChecks)
	s.handle("PUT /v1/agent/check/pass/{id}", checkWrite, s.checkVerb(api.HealthPassing))
	s.handle("PUT /v1/agent/check/warn/{id}", checkWrite, s.checkVerb(api.HealthWarning))
	s.handle("PUT /v1/agent/check/fail/{id}", checkWrite, s.checkVerb(api.HealthCritical))
	s.handle("PUT /v1/agent/check/update/{id}", checkWrite, s.checkUpdate)
	s.handle("GET /v1/catalog/services", acl.CheckedInHandler("service:read on each service: the list is filtered"), s.catalogServices)
	s.handle("GET /v1/catalog/nodes", acl.CheckedInHandler("node:read on each node: the list is filtered"), s.catalogNodes)
	s.handle("GET /v1/catalog/service/{name}", acl.RequireOnPath(acl.ResourceService, "name", acl.Read), s.catalogService)
	s.handle("GET /v1/health/service/{name}", acl.RequireOnPath(acl.ResourceService, "name", acl.Read), s.healthService)
	if err := s.Mount("GET /v1/metrics", agentRead, s.metricsHandler()); err != nil {
		panic(err)
	}
}

func (s *Server) agentSelf(w http.ResponseWriter, r *http.Request) {
	ni := s.deps.Local.NodeInfo()
	httpjson.Write(w, http.StatusOK, api.Self{
		Node:         s.deps.Local.NodeName(),
		Addr:         ni.Addr,
		TunnelPort:   ni.TunnelPort,
		Server:       ni.Server,
		Meta:         ni.Meta,
		Build:        api.Build{Version: s.cfg.Version, Commit: s.cfg.Commit},
		CatalogIndex: s.deps.Catalog.Current().Index(),
		Services:     len(s.deps.Local.Services()),
	})
}

func (s *Server) agentMembers(w http.ResponseWriter, r *http.Request) {
	var out []api.Member
	if s.deps.Members != nil {
		out = s.deps.Members.Members()
	} else {
		for _, m := range s.deps.Catalog.Current().Members() {
			out = append(out, api.Member{Name: m.Node, Addr: m.Addr, Status: string(m.Status), Server: m.Server, Meta: m.Meta,
				TunnelPort: m.TunnelPort, Services: len(m.Services), RecordVersion: m.Version})
		}
	}
	authz := authorizer(r)
	out = slices.DeleteFunc(out, func(m api.Member) bool { return !authz.Allowed(acl.ResourceNode, m.Name, acl.Read) })
	if out == nil {
		out = []api.Member{}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	httpjson.Write(w, http.StatusOK, out)
}

func (s *Server) agentServices(w http.ResponseWriter, r *http.Request) {
	authz := authorizer(r)
	out := slices.DeleteFunc(s.deps.Local.Services(), func(svc api.AgentService) bool {
		return !authz.Allowed(acl.ResourceService, svc.Name, acl.Read)
	})
	if out == nil {
		out = []api.AgentService{}
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (s *Server) agentService(w http.ResponseWriter, r *http.Request) {
	id, err := pathValue(r, "id")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	svc, ok := s.deps.Local.Service(id)
	if !ok && id == "register" {
		// GET on the register endpoint lands here, as the patterns overlap.
		w.Header().Set("Allow", http.MethodPut)
		httpjson.Error(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s is not allowed on %s; use PUT", r.Method, r.URL.Path))
		return
	}
	if !ok {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("service %q is not registered on this agent", id))
		return
	}
	if err := authorizer(r).Check(acl.ResourceService, svc.Name, acl.Read); err != nil {
		deny(w, r, err)
		return
	}
	httpjson.Write(w, http.StatusOK, svc)
}

func (s *Server) agentRegister(w http.ResponseWriter, r *http.Request) {
	var def api.ServiceDefinition
	if err := httpjson.Decode(r, &def); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if err := def.Validate(); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	authz := authorizer(r)
	if err := authz.Check(acl.ResourceService, def.Name, acl.Write); err != nil {
		deny(w, r, err)
		return
	}
	// Registering under the ID of another service replaces it: that needs
	// write on the service replaced too.
	if old, ok := s.deps.Local.Service(def.Normalize().ID); ok && !strings.EqualFold(old.Name, def.Name) {
		if err := authz.Check(acl.ResourceService, old.Name, acl.Write); err != nil {
			deny(w, r, err)
			return
		}
	}
	if err := s.deps.Local.Register(def); err != nil {
		s.localError(w, err)
		return
	}
	id := def.Normalize().ID
	svc, ok := s.deps.Local.Service(id)
	if !ok {
		// Deregistered again in between; the registration itself succeeded.
		httpjson.Write(w, http.StatusOK, struct{}{})
		return
	}
	httpjson.Write(w, http.StatusOK, svc)
}

func (s *Server) agentDeregister(w http.ResponseWriter, r *http.Request) {
	id, err := pathValue(r, "id")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if svc, ok := s.deps.Local.Service(id); ok {
		if err := authorizer(r).Check(acl.ResourceService, svc.Name, acl.Write); err != nil {
			deny(w, r, err)
			return
		}
	}
	if err := s.deps.Local.Deregister(id); err != nil {
		if errors.Is(err, local.ErrServiceNotFound) {
			httpjson.Error(w, http.StatusNotFound, fmt.Errorf("service %q is not registered on this agent", id))
			return
		}
		s.localError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, struct{}{})
}

func (s *Server) agentChecks(w http.ResponseWriter, r *http.Request) {
	authz := authorizer(r)
	out := slices.DeleteFunc(s.deps.Local.Checks(), func(c api.CheckStatus) bool {
		res, name := s.checkResource(c)
		return !authz.Allowed(res, name, acl.Read)
	})
	if out == nil {
		out = []api.CheckStatus{}
	}
	httpjson.Write(w, http.StatusOK, out)
}

// checkVerb serves PUT /v1/agent/check/{pass,warn,fail}/<id>?note=...
func (s *Server) checkVerb(status string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.updateCheck(w, r, status, r.URL.Query().Get("note"))
	}
}

// checkUpdate serves PUT /v1/agent/check/update/<id> with a CheckUpdate body.
func (s *Server) checkUpdate(w http.ResponseWriter, r *http.Request) {
	var u api.CheckUpdate
	if err := httpjson.Decode(r, &u); err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	switch u.Status {
	case api.HealthPassing, api.HealthWarning, api.HealthCritical:
	default:
		httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("%w: field \"status\": %q must be passing, warning or critical", httpjson.ErrBadBody, u.Status))
		return
	}
	s.updateCheck(w, r, u.Status, u.Output)
}

func (s *Server) updateCheck(w http.ResponseWriter, r *http.Request, status, note string) {
	id, err := pathValue(r, "id")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	for _, c := range s.deps.Local.Checks() {
		if c.ID != id {
			continue
		}
		res, name := s.checkResource(c)
		if err := authorizer(r).Check(res, name, acl.Write); err != nil {
			deny(w, r, err)
			return
		}
	}
	err = s.deps.Local.UpdateTTL(id, status, note)
	switch {
	case err == nil:
		httpjson.Write(w, http.StatusOK, struct{}{})
	case errors.Is(err, local.ErrCheckNotFound):
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("check %q is not registered on this agent", id))
	case errors.Is(err, local.ErrNotTTL):
		httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("check %q is not a ttl check; only ttl checks are updated through the API", id))
	case errors.Is(err, local.ErrBadStatus):
		httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("status %q must be passing, warning or critical", status))
	default:
		s.localError(w, err)
	}
}

// checkResource is what a check belongs to: its service, or the node for a
// check of the node itself.
func (s *Server) checkResource(c api.CheckStatus) (acl.Resource, string) {
	if c.ServiceName != "" {
		return acl.ResourceService, c.ServiceName
	}
	return acl.ResourceNode, s.deps.Local.NodeName()
}

// localError answers an error of the local state that no handler mapped.
func (s *Server) localError(w http.ResponseWriter, err error) {
	var ve *api.ValidationError
	switch {
	case errors.As(err, &ve):
		httpjson.Error(w, http.StatusBadRequest, ve)
	case errors.Is(err, local.ErrClosed), errors.Is(err, local.ErrNotStarted):
		httpjson.Error(w, http.StatusServiceUnavailable, errors.New("the agent is not running its local state (starting or stopping)"))
	default:
		s.log.Error("local state error", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, err)
	}
}

func (s *Server) catalogServices(w http.ResponseWriter, r *http.Request) {
	snap, ok := s.blockingSnapshot(w, r)
	if !ok {
		return
	}
	authz := authorizer(r)
	out := []api.CatalogServiceSummary{}
	for _, name := range snap.ServiceNames() {
		if !authz.Allowed(acl.ResourceService, name, acl.Read) {
			continue
		}
		sum := api.CatalogServiceSummary{Name: name, Passing: len(snap.Passing(name, ""))}
		tags := map[string]bool{}
		for _, inst := range snap.Instances(name) {
			sum.Instances++
			for _, t := range inst.Service.Tags {
				tags[t] = true
			}
		}
		for t := range tags {
			sum.Tags = append(sum.Tags, t)
		}
		sort.Strings(sum.Tags)
		out = append(out, sum)
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (s *Server) catalogNodes(w http.ResponseWriter, r *http.Request) {
	snap, ok := s.blockingSnapshot(w, r)
	if !ok {
		return
	}
	authz := authorizer(r)
	out := []api.Node{}
	for _, m := range snap.Members() {
		if authz.Allowed(acl.ResourceNode, m.Node, acl.Read) {
			out = append(out, nodeOf(m))
		}
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (s *Server) catalogService(w http.ResponseWriter, r *http.Request) {
	name, tag, ok := s.serviceQuery(w, r)
	if !ok {
		return
	}
	snap, ok := s.blockingSnapshot(w, r)
	if !ok {
		return
	}
	out := []api.CatalogServiceEntry{}
	for _, inst := range snap.Instances(name) {
		if tag != "" && !inst.Service.HasTag(tag) {
			continue
		}
		m, svc := inst.Member, inst.Service
		out = append(out, api.CatalogServiceEntry{
			Node:           m.Node,
			NodeAddr:       m.Addr,
			NodeStatus:     string(m.Status),
			Address:        instanceAddr(inst),
			ServiceID:      svc.ID,
			ServiceName:    svc.Name,
			ServiceAddress: svc.Address,
			Port:           svc.Port,
			Ports:          ports(svc.Ports),
			Tags:           svc.Tags,
			Meta:           svc.Meta,
			Health:         string(svc.Health),
			Passing:        inst.Passing,
		})
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (s *Server) healthService(w http.ResponseWriter, r *http.Request) {
	name, tag, ok := s.serviceQuery(w, r)
	if !ok {
		return
	}
	passingOnly := false
	if r.URL.Query().Has("passing") {
		v := r.URL.Query().Get("passing")
		passingOnly = true
		if v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				httpjson.Error(w, http.StatusBadRequest, fmt.Errorf("query parameter \"passing\": %q is not a boolean", v))
				return
			}
			passingOnly = b
		}
	}
	snap, ok := s.blockingSnapshot(w, r)
	if !ok {
		return
	}
	out := []api.HealthServiceEntry{}
	for _, inst := range snap.Instances(name) {
		if tag != "" && !inst.Service.HasTag(tag) {
			continue
		}
		if passingOnly && !inst.Passing {
			continue
		}
		m, svc := inst.Member, inst.Service
		status := string(svc.Health)
		if !m.Status.Reachable() {
			status = api.HealthCritical
		}
		out = append(out, api.HealthServiceEntry{
			Node: nodeOf(m),
			Service: api.ServiceInstance{
				ID:      svc.ID,
				Name:    svc.Name,
				Address: instanceAddr(inst),
				Port:    svc.Port,
				Ports:   ports(svc.Ports),
				Tags:    svc.Tags,
				Meta:    svc.Meta,
				Health:  string(svc.Health),
			},
			Status: status,
		})
	}
	httpjson.Write(w, http.StatusOK, out)
}

// serviceQuery reads the service name from the path and the tag filter.
func (s *Server) serviceQuery(w http.ResponseWriter, r *http.Request) (name, tag string, ok bool) {
	name, err := pathValue(r, "name")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return "", "", false
	}
	return name, r.URL.Query().Get("tag"), true
}

func nodeOf(m *catalog.Member) api.Node {
	return api.Node{
		Name:       m.Node,
		Addr:       m.Addr,
		TunnelPort: m.TunnelPort,
		Server:     m.Server,
		Status:     string(m.Status),
		Meta:       m.Meta,
		Services:   len(m.Services),
	}
}

func instanceAddr(inst catalog.Instance) string {
	if inst.IP.IsValid() {
		return inst.IP.String()
	}
	if inst.Service.Address != "" {
		return inst.Service.Address
	}
	return inst.Member.Addr
}

func ports(ps []catalog.Port) []api.ServicePort {
	if len(ps) == 0 {
		return nil
	}
	out := make([]api.ServicePort, len(ps))
	for i, p := range ps {
		out[i] = api.ServicePort{Name: p.Name, Port: p.Port}
	}
	return out
}
