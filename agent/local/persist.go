package local

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

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/internal/atomicfile"
)

// stateVersion is the format version of services.json.
const stateVersion = 1

// stateFile is the JSON document kept in <data_dir>/local/services.json.
type stateFile struct {
	Version  int                     `json:"version"`
	Services []api.ServiceDefinition `json:"services"`
}

func (m *Manager) statePath() string {
	return filepath.Join(m.cfg.DataDir, "local", "services.json")
}

// load reads the API registrations kept in the data directory. A missing
// file is an empty list; anything else that is wrong is an error naming the
// file, so that nothing stored is silently dropped.
func (m *Manager) load() ([]api.ServiceDefinition, error) {
	if m.cfg.DataDir == "" {
		return nil, nil
	}
	path := m.statePath()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("local: restore: %w", err)
	}
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("local: restore %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("local: restore %s: version %d is not supported (want %d)", path, st.Version, stateVersion)
	}
	defs, err := normalizeAll(st.Services)
	if err != nil {
		return nil, fmt.Errorf("local: restore %s: %w", path, err)
	}
	return defs, nil
}

// persistLocked writes the API registrations as they will be once service
// id is replaced by def (or removed, when def is nil). The file is written
// to a temporary name, synced and renamed, so a crash leaves either the old
// or the new list, never a torn one. On error the caller changes nothing.
func (m *Manager) persistLocked(id string, def *api.ServiceDefinition) error {
	if m.cfg.DataDir == "" {
		return nil
	}
	defs := map[string]api.ServiceDefinition{}
	for sid, s := range m.services {
		if s.source == api.SourceAPI {
			defs[sid] = s.def
		}
	}
	delete(defs, id)
	if def != nil {
		defs[id] = *def
	}
	st := stateFile{Version: stateVersion, Services: []api.ServiceDefinition{}}
	for _, sid := range slices.Sorted(maps.Keys(defs)) {
		st.Services = append(st.Services, defs[sid])
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("local: persist: %w", err)
	}
	if err := atomicfile.Write(m.statePath(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("local: persist: %w", err)
	}
	return nil
}
