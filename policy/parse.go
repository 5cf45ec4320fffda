package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshwork/meshwork/internal/suggest"
)

// Limits on outside input, so that a hostile file cannot exhaust memory.
const (
	// MaxInput is the largest input Parse reads (1 MiB).
	MaxInput = 1 << 20
	// MaxDocuments is the most documents one input may hold.
	MaxDocuments = 1000
	// maxDepth bounds YAML nesting; documents are at most a few levels deep.
	maxDepth = 16
	// maxItems bounds every list and map in a document.
	maxItems = 1000
)

// ErrInvalid is wrapped by every error about a document's content, so that
// callers can tell bad input (HTTP 400) from a failure of their own.
var ErrInvalid = errors.New("invalid policy")

// FieldError says which document and which field is wrong, and why. Its
// text reads `Split "web": splits[1].weight: -5 must be between 0 and 100`.
type FieldError struct {
	// Kind and Name identify the document, when it got that far.
	Kind Kind
	Name string
	// Doc is the 1-based position of the document in its input; Line its
	// first line (0 when unknown, as for a document that came as JSON).
	Doc, Line int
	// Path is the field, such as "splits[1].weight"; empty for the document.
	Path string
	// Msg says what is wrong.
	Msg string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Kind != "" && e.Name != "":
		fmt.Fprintf(&b, "%s %q", e.Kind, e.Name)
	case e.Kind != "":
		fmt.Fprintf(&b, "%s (document %d", e.Kind, e.Doc)
		if e.Line > 0 {
			fmt.Fprintf(&b, ", line %d", e.Line)
		}
		b.WriteString(")")
	default:
		fmt.Fprintf(&b, "document %d", e.Doc)
		if e.Line > 0 {
			fmt.Fprintf(&b, " (line %d)", e.Line)
		}
	}
	if e.Path != "" {
		b.WriteString(": ")
		b.WriteString(e.Path)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Parse reads one or more YAML documents separated by `---` (JSON is YAML,
// so a JSON object or a JSON array of objects is read too), decodes each
// strictly, and validates it. Unknown keys, wrong types, bare numbers for
// durations, duplicate keys and YAML aliases are refused. The error names
// every wrong field of every document (errors.Join of *FieldError).
func Parse(data []byte) ([]Document, error) {
	if len(data) > MaxInput {
		return nil, fmt.Errorf("%w: input is %d bytes, more than the limit of %d", ErrInvalid, len(data), MaxInput)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var bodies []*yaml.Node
	for {
		var n yaml.Node
		err := safeDecode(dec, &n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &FieldError{Doc: len(bodies) + 1, Msg: "malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		body := &n
		if body.Kind == yaml.DocumentNode && len(body.Content) == 1 {
			body = body.Content[0]
		}
		switch {
		case body.Kind == yaml.ScalarNode && body.Tag == "!!null":
			// An empty document, as between two `---` lines.
		case body.Kind == yaml.SequenceNode:
			bodies = append(bodies, body.Content...) // a JSON array of documents
		default:
			bodies = append(bodies, body)
		}
		if len(bodies) > MaxDocuments {
			return nil, fmt.Errorf("%w: more than %d documents", ErrInvalid, MaxDocuments)
		}
	}
	if len(bodies) == 0 {
		return nil, fmt.Errorf("%w: no document found", ErrInvalid)
	}
	var (
		docs []Document
		errs []error
	)
	for i, body := range bodies {
		d, err := decodeDocument(body, i+1)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		docs = append(docs, d)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	seen := make(map[Key]int, len(docs))
	for i := range docs {
		k := docs[i].Key().Normal()
		if j, dup := seen[k]; dup {
			errs = append(errs, &FieldError{Kind: docs[i].Kind, Name: docs[i].Name, Doc: i + 1,
				Msg: fmt.Sprintf("appears twice in the input (also document %d)", j+1)})
		}
		seen[k] = i
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return docs, nil
}

// safeDecode turns a panic inside the YAML library into an error: one bad
// input must never take the agent down.
func safeDecode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

// decodeDocument decodes and validates one document node.
func decodeDocument(n *yaml.Node, pos int) (Document, error) {
	d := &decoder{doc: pos, line: n.Line}
	if n.Kind != yaml.MappingNode {
		return Document{}, d.fail("", n, "a document must be a mapping with kind and name, got %s", nodeKind(n))
	}
	var kindNode, nameNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "kind":
			kindNode = n.Content[i+1]
		case "name":
			nameNode = n.Content[i+1]
		}
	}
	if kindNode == nil {
		return Document{}, d.fail("kind", n, "required (one of %s)", kindList())
	}
	if kindNode.Kind != yaml.ScalarNode || kindNode.Tag != "!!str" {
		return Document{}, d.fail("kind", kindNode, "must be a string")
	}
	kind := Kind(kindNode.Value)
	spec := newSpec(kind)
	if spec == nil {
		return Document{}, d.fail("kind", kindNode, "%q is unknown (want one of %s)", kindNode.Value, kindList())
	}
	d.kind = kind
	if nameNode == nil {
		return Document{}, d.fail("name", n, "required")
	}
	if nameNode.Kind != yaml.ScalarNode || nameNode.Tag != "!!str" {
		return Document{}, d.fail("name", nameNode, "must be a string")
	}
	d.name = nameNode.Value

	// Decode the rest of the mapping into the spec, refusing unknown keys.
	rest := &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; k == "kind" || k == "name" {
			if countKey(n, k) > 1 {
				d.add(k, n.Content[i], "appears twice")
			}
			continue
		}
		rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
	}
	d.decode(rest, reflect.ValueOf(spec).Elem(), "", 1)
	doc := Document{Kind: kind, Name: d.name, Spec: spec}
	if len(d.errs) == 0 {
		d.errs = append(d.errs, validateDoc(&doc, pos, n.Line)...)
	}
	if len(d.errs) > 0 {
		return Document{}, errors.Join(d.errs...)
	}
	return doc, nil
}

func countKey(n *yaml.Node, key string) int {
	c := 0
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			c++
		}
	}
	return c
}

// decoder decodes a yaml.Node into Go values by their `yaml` tags, strictly,
// collecting an error for each wrong field with its path.
type decoder struct {
	kind Kind
	name string
	doc  int
	line int
	errs []error
}

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) error {
	d.add(path, n, format, args...)
	return d.errs[len(d.errs)-1]
}

func (d *decoder) add(path string, n *yaml.Node, format string, args ...any) {
	line := d.line
	if n != nil && n.Line > 0 {
		line = n.Line
	}
	msg := fmt.Sprintf(format, args...)
	if n != nil && n.Line > 0 && d.name != "" {
		msg += fmt.Sprintf(" (line %d)", n.Line)
	}
	d.errs = append(d.errs, &FieldError{Kind: d.kind, Name: d.name, Doc: d.doc, Line: line, Path: path, Msg: msg})
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("string %q", truncate(n.Value))
		case "!!null":
			return "null"
		default:
			return fmt.Sprintf("%s %s", strings.TrimPrefix(n.Tag, "!!"), truncate(n.Value))
		}
	}
	return "nothing"
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

var durationType = reflect.TypeOf(Duration(0))

// decode stores n into v. v is addressable.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, depth int) {
	if depth > maxDepth {
		d.add(path, n, "nested too deeply")
		return
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		d.add(path, n, "YAML anchors and aliases are not supported")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // `key:` with no value leaves the zero value
	}
	if v.Type() == durationType {
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			d.add(path, n, "%s must be a duration string such as \"5s\"", nodeKind(n))
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.add(path, n, "%q is not a duration such as \"5s\" or \"250ms\"", truncate(n.Value))
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.decode(n, p.Elem(), path, depth+1)
		v.Set(p)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.add(path, n, "must be a mapping, got %s", nodeKind(n))
			return
		}
		fields := structFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			key := kn.Value
			if kn.Kind != yaml.ScalarNode {
				d.add(path, kn, "keys must be strings, got %s", nodeKind(kn))
				continue
			}
			fp := join(path, key)
			idx, ok := fields[key]
			if !ok {
				d.add(fp, kn, "unknown field%s", suggest.Hint(key, slices.Sorted(maps.Keys(fields))))
				continue
			}
			if seen[key] {
				d.add(fp, kn, "appears twice")
				continue
			}
			seen[key] = true
			d.decode(vn, v.Field(idx), fp, depth+1)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.add(path, n, "must be a list, got %s", nodeKind(n))
			return
		}
		if len(n.Content) > maxItems {
			d.add(path, n, "has %d items, more than %d", len(n.Content), maxItems)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
		v.Set(s)
	case reflect.Map: // map[string]string only
		if n.Kind != yaml.MappingNode {
			d.add(path, n, "must be a mapping, got %s", nodeKind(n))
			return
		}
		if len(n.Content)/2 > maxItems {
			d.add(path, n, "has %d keys, more than %d", len(n.Content)/2, maxItems)
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if kn.Kind != yaml.ScalarNode {
				d.add(path, kn, "keys must be strings, got %s", nodeKind(kn))
				continue
			}
			fp := join(path, kn.Value)
			if m.MapIndex(reflect.ValueOf(kn.Value)).IsValid() {
				d.add(fp, kn, "appears twice")
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(vn, ev, fp, depth+1)
			m.SetMapIndex(reflect.ValueOf(kn.Value), ev)
		}
		v.Set(m)
	case reflect.String:
		// Every scalar is accepted as a string (tag values such as `2` or
		// `true` are common); mappings and lists are not.
		if n.Kind != yaml.ScalarNode {
			d.add(path, n, "must be a string, got %s", nodeKind(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			d.add(path, n, "must be a whole number, got %s", nodeKind(n))
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil || i > math.MaxInt32 || i < math.MinInt32 {
			d.add(path, n, "%s is out of range", truncate(n.Value))
			return
		}
		v.SetInt(i)
	default:
		d.add(path, n, "cannot be decoded (internal: %s)", v.Type())
	}
}

// structFields maps yaml tag names to field indexes.
func structFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		if name, _, _ := strings.Cut(tag, ","); name != "" && name != "-" {
			m[name] = i
		}
	}
	return m
}
