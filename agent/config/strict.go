package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshwork/meshwork/internal/suggest"
)

// checkKeys walks a YAML document beside the Go type it decodes into and
// returns the first key that the type does not know, with its dotted path and
// line. yaml.v3's own KnownFields error names the Go type, not the key path an
// operator wrote, so we find unknown keys ourselves before decoding. It also
// records where each key path was set, so that later validation errors can
// point at the file and line.
func checkKeys(n *yaml.Node, t reflect.Type, path string, seen map[string]int) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkKeys(c, t, path, seen); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return &keyError{line: n.Line, path: path, msg: "YAML aliases are not supported"}
	}
	if _, ok := reflect.New(t).Interface().(yaml.Unmarshaler); ok {
		// The type checks its own shape; decode it alone to learn where it fails.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return &keyError{line: n.Line, path: path, msg: linePrefix.ReplaceAllString(yamlMessage(err), "")}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return &keyError{line: n.Line, path: path, msg: fmt.Sprintf("want a mapping, got %s", kindName(n))}
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				return &keyError{line: k.Line, path: p, msg: "unknown key" + suggest.Hint(k.Value, slices.Sorted(maps.Keys(fields)))}
			}
			seen[p] = k.Line
			if err := checkKeys(v, f.Type, p, seen); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			if n.Tag == "!!null" {
				return nil
			}
			return &keyError{line: n.Line, path: path, msg: fmt.Sprintf("want a list, got %s", kindName(n))}
		}
		for i, c := range n.Content {
			if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), seen); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			if n.Tag == "!!null" {
				return nil
			}
			return &keyError{line: n.Line, path: path, msg: fmt.Sprintf("want a mapping, got %s", kindName(n))}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), seen); err != nil {
				return err
			}
		}
	default:
		if n.Kind != yaml.ScalarNode {
			return &keyError{line: n.Line, path: path, msg: fmt.Sprintf("want a single value, got %s", kindName(n))}
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return &keyError{line: n.Line, path: path, msg: linePrefix.ReplaceAllString(yamlMessage(err), "")}
		}
	}
	return nil
}

// keyError is a problem at one key of one file.
type keyError struct {
	line int
	path string
	msg  string
}

func (e *keyError) Error() string { return fmt.Sprintf("line %d: %s: %s", e.line, e.path, e.msg) }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the YAML key of each field of struct t to the field,
// following inline (embedded) structs.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}
