package local

// Maintenance: an operator takes the node, or one service, out of service
// while working on it. The instances concerned are published as critical,
// so that DNS leaves them out of its answers and other nodes' data planes
// out of their pools, and a critical check (api.NodeMaintenanceCheckID, or
// api.ServiceMaintenanceCheckPrefix+ID) says why. The state is kept in
// <data_dir>/local/maintenance.json: a restart in the middle of the work
// does not put the node back in service.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/atomicfile"
)

// Default reasons, when the operator gives none.
const (
	defaultNodeReason    = "Maintenance mode is enabled for this node, but no reason was provided."
	defaultServiceReason = "Maintenance mode is enabled for this service, but no reason was provided."
)

// maxReasonLen bounds a reason: it travels in every record of the node.
const maxReasonLen = 512

// ErrBadReason: a maintenance reason is too long or not printable text.
var ErrBadReason = errors.New("bad maintenance reason")

// maintEntry is one maintenance mode that is on.
type maintEntry struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// maintState is the maintenance of the node and of its services.
type maintState struct {
	Node     *maintEntry           `json:"node,omitempty"`
	Services map[string]maintEntry `json:"services,omitempty"` // by service ID
}

const maintVersion = 1

// maintFile is <data_dir>/local/maintenance.json.
type maintFile struct {
	Version int `json:"version"`
	maintState
}

func (m *Manager) maintPath() string {
	return filepath.Join(m.cfg.DataDir, "local", "maintenance.json")
}

// loadMaint reads the maintenance state kept in the data directory. A
// missing file is no maintenance; anything else wrong is an error naming
// the file, since starting in service a node that an operator took out
// would be worse than not starting.
func (m *Manager) loadMaint() (maintState, error) {
	if m.cfg.DataDir == "" {
		return maintState{}, nil
	}
	path := m.maintPath()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return maintState{}, nil
	}
	if err != nil {
		return maintState{}, fmt.Errorf("local: restore maintenance: %w", err)
	}
	var f maintFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return maintState{}, fmt.Errorf("local: restore maintenance %s: %w", path, err)
	}
	if f.Version != maintVersion {
		return maintState{}, fmt.Errorf("local: restore maintenance %s: version %d is not supported (want %d)", path, f.Version, maintVersion)
	}
	return f.maintState, nil
}

// persistMaintLocked writes st to the data directory; on error the caller
// changes nothing.
func (m *Manager) persistMaintLocked(st maintState) error {
	if m.cfg.DataDir == "" {
		return nil
	}
	b, err := json.MarshalIndent(maintFile{Version: maintVersion, maintState: st}, "", "  ")
	if err != nil {
		return fmt.Errorf("local: persist maintenance: %w", err)
	}
	if err := atomicfile.Write(m.maintPath(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("local: persist maintenance: %w", err)
	}
	return nil
}

func checkReason(reason string) error {
	if len(reason) > maxReasonLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadReason, len(reason), maxReasonLen)
	}
	for _, r := range reason {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: it holds the control character %q", ErrBadReason, r)
		}
	}
	return nil
}

// SetNodeMaintenance puts the node in maintenance (on true) with reason,
// or takes it out, and publishes. Every service of the node then shows as
// critical. Turning on a mode already on keeps its start and updates its
// reason.
func (m *Manager) SetNodeMaintenance(on bool, reason string) error {
	if err := checkReason(reason); err != nil {
		return fmt.Errorf("local: node maintenance: %w", err)
	}
	if reason == "" {
		reason = defaultNodeReason
	}
	m.mu.Lock()
	if err := m.usableLocked(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("local: node maintenance: %w", err)
	}
	next := m.maint.clone()
	next.Node = nil
	if on {
		e := maintEntry{Reason: reason, Since: m.deps.Clock.Now().UTC()}
		if m.maint.Node != nil {
			e.Since = m.maint.Node.Since
		}
		next.Node = &e
	}
	if err := m.persistMaintLocked(next); err != nil {
		m.mu.Unlock()
		return err
	}
	m.maint = next
	m.mu.Unlock()
	m.log.Info("node maintenance", "enabled", on, "reason", reason)
	m.publish()
	return nil
}

// SetServiceMaintenance puts the local service id in maintenance (on true)
// with reason, or takes it out, and publishes. An unknown id is an error
// matching ErrServiceNotFound.
func (m *Manager) SetServiceMaintenance(id string, on bool, reason string) error {
	if err := checkReason(reason); err != nil {
		return fmt.Errorf("local: service maintenance %q: %w", id, err)
	}
	if reason == "" {
		reason = defaultServiceReason
	}
	m.mu.Lock()
	if err := m.usableLocked(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("local: service maintenance %q: %w", id, err)
	}
	if m.services[id] == nil {
		m.mu.Unlock()
		return fmt.Errorf("local: service maintenance %q: %w", id, ErrServiceNotFound)
	}
	next := m.maint.clone()
	delete(next.Services, id)
	if on {
		e := maintEntry{Reason: reason, Since: m.deps.Clock.Now().UTC()}
		if old, ok := m.maint.Services[id]; ok {
			e.Since = old.Since
		}
		next.Services[id] = e
	}
	if err := m.persistMaintLocked(next); err != nil {
		m.mu.Unlock()
		return err
	}
	m.maint = next
	m.mu.Unlock()
	m.log.Info("service maintenance", "service", id, "enabled", on, "reason", reason)
	m.publish()
	return nil
}

// Maintenance returns the maintenance modes that are on.
func (m *Manager) Maintenance() api.MaintenanceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := api.MaintenanceStatus{Services: []api.MaintenanceMode{}}
	if e := m.maint.Node; e != nil {
		out.Node = &api.MaintenanceMode{Reason: e.Reason, Since: formatSince(e.Since)}
	}
	for _, id := range slices.Sorted(maps.Keys(m.maint.Services)) {
		e := m.maint.Services[id]
		mm := api.MaintenanceMode{ServiceID: id, Reason: e.Reason, Since: formatSince(e.Since)}
		if s := m.services[id]; s != nil {
			mm.ServiceName = s.def.Name
		}
		out.Services = append(out.Services, mm)
	}
	return out
}

// dropServiceMaintLocked forgets the maintenance of a service that is
// deregistered, so that a new service under its ID starts in service.
func (m *Manager) dropServiceMaintLocked(id string) error {
	if _, ok := m.maint.Services[id]; !ok {
		return nil
	}
	next := m.maint.clone()
	delete(next.Services, id)
	if err := m.persistMaintLocked(next); err != nil {
		return err
	}
	m.maint = next
	return nil
}

// healthLocked is the health the node publishes for s: its checks', or
// critical while the node or s is in maintenance.
func (m *Manager) healthLocked(s *service) catalog.Health {
	if m.maint.Node != nil {
		return catalog.Critical
	}
	if _, ok := m.maint.Services[s.def.ID]; ok {
		return catalog.Critical
	}
	return s.health()
}

// maintChecksLocked are the maintenance checks of s (serviceID set), or of
// the node (s nil).
func (m *Manager) maintChecksLocked(s *service) []api.CheckStatus {
	if s == nil {
		if e := m.maint.Node; e != nil {
			return []api.CheckStatus{{ID: api.NodeMaintenanceCheckID, Name: "Node Maintenance Mode", Type: api.CheckMaintenance,
				Status: api.HealthCritical, Output: e.Reason, Since: formatSince(e.Since)}}
		}
		return nil
	}
	e, ok := m.maint.Services[s.def.ID]
	if !ok {
		return nil
	}
	return []api.CheckStatus{{ID: api.ServiceMaintenanceCheckPrefix + s.def.ID, Name: "Service Maintenance Mode",
		ServiceID: s.def.ID, ServiceName: s.def.Name, Type: api.CheckMaintenance,
		Status: api.HealthCritical, Output: e.Reason, Since: formatSince(e.Since)}}
}

func (st maintState) clone() maintState {
	out := maintState{Services: maps.Clone(st.Services)}
	if out.Services == nil {
		out.Services = map[string]maintEntry{}
	}
	if st.Node != nil {
		n := *st.Node
		out.Node = &n
	}
	return out
}

func formatSince(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }
