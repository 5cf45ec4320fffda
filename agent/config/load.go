package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshwork/meshwork/internal/strictyaml"
)

// ErrNotFound wraps the error for a config file or directory that does not
// exist, as opposed to one that exists and is wrong.
var ErrNotFound = errors.New("not found")

// Loaded is a merged configuration and where each of its keys came from.
type Loaded struct {
	Config
	// origin maps a key path ("ports.http", "services[2]") to "file:line".
	origin map[string]string
	// secretFiles are the files that set a secret key (see SecretWarnings).
	secretFiles []secretFile
}

// Origin returns "file:line" for a key path, or "" when no file set it.
func (l *Loaded) Origin(path string) string { return l.origin[path] }

// Load reads files, then the *.yaml and *.yml files of each directory in name
// order, merging them: later scalars win, and services and retry_join
// accumulate. It does not apply defaults or validate; see LoadAndValidate.
func Load(files, dirs []string) (*Loaded, error) {
	l := &Loaded{origin: map[string]string{}}
	var paths []string
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return nil, fileError(f, err)
		}
		if st.IsDir() {
			return nil, fmt.Errorf("config file %s: is a directory; use --config-dir", f)
		}
		paths = append(paths, f)
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, fileError(d, err)
		}
		var names []string
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			paths = append(paths, filepath.Join(d, n))
		}
	}
	for _, p := range paths {
		if err := l.mergeFile(p); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func fileError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("config %s: %w: no such file or directory", path, ErrNotFound)
	}
	return fmt.Errorf("config %s: %w", path, err)
}

// mergeFile decodes one file on top of what is loaded so far.
func (l *Loaded) mergeFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fileError(path, err)
	}
	seen, err := l.mergeBytes(path, data)
	if err != nil {
		return err
	}
	l.noteSecrets(path, seen)
	return nil
}

// mergeBytes merges one file's contents and returns the key paths it set,
// with their lines. Its error names every wrong key of the file.
func (l *Loaded) mergeBytes(name string, data []byte) (map[string]int, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil // an empty file sets nothing
	}
	doc, err := strictyaml.ReadOne(data)
	if err != nil {
		// yaml.v3's syntax errors read "yaml: line 3: did not find ...".
		return nil, fmt.Errorf("config %s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc == nil || len(doc.Content) == 0 {
		return nil, nil // only comments
	}
	if body := doc.Content[0]; body.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config %s: line %d: the file must be a mapping of keys, got %s", name, body.Line, strictyaml.Describe(body))
	}

	// Lists that accumulate across files are decoded alone and appended.
	prevServices, prevJoin := l.Services, l.RetryJoin
	l.Services, l.RetryJoin, l.Service = nil, nil, nil
	seen := map[string]int{}
	dec := strictyaml.Decoder{OnKey: func(path string, line int) { seen[path] = line }}
	if errs := dec.Decode(doc, &l.Config); len(errs) > 0 {
		l.Services, l.RetryJoin, l.Service = prevServices, prevJoin, nil
		list := make([]error, len(errs))
		for i, e := range errs {
			list[i] = fmt.Errorf("config %s: %w", name, e)
		}
		return nil, errors.Join(list...)
	}
	offset := len(prevServices)
	if l.Service != nil {
		l.Services = append(l.Services, *l.Service)
		l.Service = nil
	}
	l.Services = append(prevServices, l.Services...)
	l.RetryJoin = append(prevJoin, l.RetryJoin...)

	for p, line := range seen {
		l.origin[renumberService(p, offset, seen)] = name + ":" + strconv.Itoa(line)
	}
	return seen, nil
}

var serviceIndex = regexp.MustCompile(`^services\[(\d+)\]`)

// renumberService maps a key path of one file to its path in the merged
// config, where the file's services follow those of earlier files and its
// single `service` comes after its own `services`.
func renumberService(p string, offset int, seen map[string]int) string {
	if m := serviceIndex.FindStringSubmatch(p); m != nil {
		i, _ := strconv.Atoi(m[1])
		return fmt.Sprintf("services[%d]%s", i+offset, p[len(m[0]):])
	}
	if p == "service" || strings.HasPrefix(p, "service.") {
		n := 0
		for q := range seen {
			if m := serviceIndex.FindStringSubmatch(q); m != nil && q == m[0] {
				n++
			}
		}
		return fmt.Sprintf("services[%d]%s", offset+n, strings.TrimPrefix(p, "service"))
	}
	return p
}

// LoadAndValidate loads files and dirs, lets override apply command-line
// values on top (it may be nil), fills the defaults and validates. Its errors
// name the file, line and key.
func LoadAndValidate(files, dirs []string, override func(*Config)) (*Loaded, error) {
	l, err := Load(files, dirs)
	if err != nil {
		return nil, err
	}
	if override != nil {
		override(&l.Config)
	}
	if err := l.ApplyDefaults(); err != nil {
		return nil, err
	}
	if err := l.Annotate(l.Validate()); err != nil {
		return nil, err
	}
	return l, nil
}
