package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshwork/meshwork/internal/strictyaml"
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
		err := strictyaml.Next(dec, &n)
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

// decodeDocument decodes and validates one document node.
func decodeDocument(n *yaml.Node, pos int) (Document, error) {
	d := &decoder{doc: pos, line: n.Line}
	if n.Kind != yaml.MappingNode {
		return Document{}, d.fail("", n, "a document must be a mapping with kind and name, got %s", strictyaml.Describe(n))
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
				d.add(k, n.Content[i].Line, strictyaml.MsgTwice)
			}
			continue
		}
		rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
	}
	for _, e := range specDecoder.Decode(rest, spec) {
		d.add(e.Path, e.Line, "%s", e.Msg)
	}
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

// decoder collects the errors of one document, each naming the document
// and the field.
type decoder struct {
	kind Kind
	name string
	doc  int
	line int
	errs []error
}

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) error {
	d.add(path, n.Line, format, args...)
	return d.errs[len(d.errs)-1]
}

func (d *decoder) add(path string, line int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if line > 0 && d.name != "" {
		msg += fmt.Sprintf(" (line %d)", line)
	}
	if line == 0 {
		line = d.line
	}
	d.errs = append(d.errs, &FieldError{Kind: d.kind, Name: d.name, Doc: d.doc, Line: line, Path: path, Msg: msg})
}

// specDecoder decodes the fields of a document: strictly, bounded, with
// durations as strings.
var specDecoder = strictyaml.Decoder{
	MaxDepth: maxDepth,
	MaxItems: maxItems,
	Types: map[reflect.Type]func(*yaml.Node, reflect.Value) string{
		reflect.TypeFor[Duration](): decodeDuration,
	},
}

// decodeDuration reads a Duration, which must be a string with a unit: a
// bare 5 could mean seconds or milliseconds.
func decodeDuration(n *yaml.Node, v reflect.Value) string {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return strictyaml.Describe(n) + ` must be a duration string such as "5s"`
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Sprintf("%q is not a duration such as \"5s\" or \"250ms\"", strictyaml.Truncate(n.Value))
	}
	v.SetInt(int64(dur))
	return ""
}
