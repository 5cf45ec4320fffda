package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/meshwork/meshwork/acl"
	"github.com/meshwork/meshwork/agent/local"
	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/httpjson"
)

// maintenanceRoutes mounts the maintenance endpoints: the node's (node:write
// on this node, as a node check needs) and a service's (service:write on
// its name).
func (s *Server) maintenanceRoutes() {
	s.handle("GET /v1/agent/maintenance", acl.CheckedInHandler("node:read on this node for its mode, service:read on each service's name: the list is filtered"), s.maintenanceStatus)
	s.handle("PUT /v1/agent/maintenance", acl.Require(acl.ResourceNode, s.deps.Local.NodeName(), acl.Write), s.nodeMaintenance)
	s.handle("PUT /v1/agent/service/maintenance/{id}", acl.CheckedInHandler("service:write on the service the ID names"), s.serviceMaintenance)
}

func (s *Server) maintenanceStatus(w http.ResponseWriter, r *http.Request) {
	authz := authorizer(r)
	st := s.deps.Local.Maintenance()
	if !authz.Allowed(acl.ResourceNode, s.deps.Local.NodeName(), acl.Read) {
		st.Node = nil
	}
	st.Services = slices.DeleteFunc(st.Services, func(m api.MaintenanceMode) bool {
		return !authz.Allowed(acl.ResourceService, m.ServiceName, acl.Read)
	})
	httpjson.Write(w, http.StatusOK, st)
}

// maintenanceQuery reads ?enable= (required) and ?reason=.
func maintenanceQuery(r *http.Request) (on bool, reason string, err error) {
	q := r.URL.Query()
	if !q.Has("enable") {
		return false, "", errors.New(`query parameter "enable" is missing: give enable=true or enable=false`)
	}
	on, err = strconv.ParseBool(q.Get("enable"))
	if err != nil {
		return false, "", fmt.Errorf("query parameter \"enable\": %q is not a boolean", q.Get("enable"))
	}
	return on, q.Get("reason"), nil
}

func (s *Server) nodeMaintenance(w http.ResponseWriter, r *http.Request) {
	on, reason, err := maintenanceQuery(r)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if err := s.deps.Local.SetNodeMaintenance(on, reason); err != nil {
		s.maintenanceError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, s.deps.Local.Maintenance())
}

func (s *Server) serviceMaintenance(w http.ResponseWriter, r *http.Request) {
	id, err := pathValue(r, "id")
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	svc, ok := s.deps.Local.Service(id)
	if !ok {
		httpjson.Error(w, http.StatusNotFound, fmt.Errorf("service %q is not registered on this agent", id))
		return
	}
	if err := authorizer(r).Check(acl.ResourceService, svc.Name, acl.Write); err != nil {
		deny(w, r, err)
		return
	}
	on, reason, err := maintenanceQuery(r)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err)
		return
	}
	if err := s.deps.Local.SetServiceMaintenance(id, on, reason); err != nil {
		s.maintenanceError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, s.deps.Local.Maintenance())
}

func (s *Server) maintenanceError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, local.ErrBadReason):
		httpjson.Error(w, http.StatusBadRequest, errors.Unwrap(err))
	case errors.Is(err, local.ErrServiceNotFound):
		httpjson.Error(w, http.StatusNotFound, err)
	default:
		s.localError(w, err)
	}
}
