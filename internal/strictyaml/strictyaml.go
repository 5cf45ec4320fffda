// Package strictyaml decodes YAML strictly, for the project's readers of
// outside files: the agent's configuration (agent/config) and policy
// documents (policy). It walks a yaml.Node tree beside the Go value it
// fills, by the values' `yaml` tags, and refuses what yaml.v3 would let
// through: unknown keys (with a did-you-mean from internal/suggest),
// duplicate keys, anchors and aliases, keys that are not strings, and
// scalars of the wrong type. Every problem is reported, each with the key
// path as the operator wrote it ("ports.http", "services[0].port") and its
// line, so that one run names all that is wrong with a file.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshwork/meshwork/internal/suggest"
)

// The words for the problems that every reader shares.
const (
	// MsgAnchor is the problem with a node that is an alias or carries an
	// anchor. Aliases let a small input expand into a huge one (the
	// "billion laughs"), and no file of this project needs them.
	MsgAnchor = "YAML anchors and aliases are not supported"
	// MsgTwice is the problem with a key that its mapping already holds.
	MsgTwice = "appears twice"
)

// Error is one problem at one key.
type Error struct {
	// Path is the key path, such as "ports.http" or "splits[1].weight";
	// empty for the document itself.
	Path string
	// Line is the 1-based line of the node, 0 when unknown.
	Line int
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Decoder holds the limits and extensions of one kind of input. The zero
// value is ready to use.
type Decoder struct {
	// MaxDepth bounds nesting. Default: 64.
	MaxDepth int
	// MaxItems bounds every list and mapping. Default: no bound.
	MaxItems int
	// Types decode the Go types that need a rule of their own, such as a
	// duration that must be a string. Such a function returns what is
	// wrong with n, or "". Types that implement yaml.Unmarshaler need no
	// entry: the Decoder calls their UnmarshalYAML.
	Types map[reflect.Type]func(n *yaml.Node, v reflect.Value) (problem string)
	// OnKey, when set, is told the path and line of every key decoded (the
	// keys of structs and of maps alike), so that later checks of the
	// values can point at where they were set.
	OnKey func(path string, line int)
}

// defaultMaxDepth is deeper than any file of this project nests.
const defaultMaxDepth = 64

// Decode stores n, a document or any node below one, into out, a non-nil
// pointer. It sets only what n holds: a key that n lacks leaves its field
// as it was, which is how configuration files merge. A null sets a
// pointer, list or mapping to nil and leaves other values alone. It returns
// every problem found, in document order; what it could decode is stored
// even then.
func (d *Decoder) Decode(n *yaml.Node, out any) []*Error {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return []*Error{{Msg: fmt.Sprintf("cannot decode into %T (internal: want a non-nil pointer)", out)}}
	}
	w := walker{Decoder: d}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	w.decode(n, v.Elem(), "", 0)
	return w.errs
}

// walker is one Decode call.
type walker struct {
	*Decoder
	errs []*Error
}

func (w *walker) add(path string, n *yaml.Node, format string, args ...any) {
	w.errs = append(w.errs, &Error{Path: path, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decode stores n into v, which is settable, and reports what is wrong.
func (w *walker) decode(n *yaml.Node, v reflect.Value, path string, depth int) {
	maxDepth := w.MaxDepth
	if maxDepth <= 0 {
		maxDepth = defaultMaxDepth
	}
	if depth > maxDepth {
		w.add(path, n, "nested too deeply (more than %d levels)", maxDepth)
		return
	}
	if Anchored(n) {
		w.add(path, n, MsgAnchor)
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		switch v.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
			v.SetZero()
		}
		return
	}
	if fn, ok := w.Types[v.Type()]; ok {
		if msg := fn(n, v); msg != "" {
			w.add(path, n, "%s", msg)
		}
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		w.unmarshaler(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		w.decode(n, v.Elem(), path, depth+1)
	case reflect.Struct:
		w.structure(n, v, path, depth)
	case reflect.Slice:
		w.list(n, v, path, depth)
	case reflect.Map:
		w.mapping(n, v, path, depth)
	default:
		if n.Kind != yaml.ScalarNode {
			w.add(path, n, "want %s, got %s", want(v.Type()), Describe(n))
			return
		}
		if msg := setScalar(n, v); msg != "" {
			w.add(path, n, "%s", msg)
		}
	}
}

// unmarshaler lets a type that implements yaml.Unmarshaler decode itself,
// once the strict rules hold for everything it would read.
func (w *walker) unmarshaler(n *yaml.Node, v reflect.Value, path string) {
	if a := findAnchor(n); a != nil {
		w.add(path, a, MsgAnchor)
		return
	}
	p := reflect.New(v.Type())
	p.Elem().Set(v)
	if err := p.Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
		w.add(path, n, "%s", CleanMessage(err))
		return
	}
	v.Set(p.Elem())
}

func (w *walker) structure(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		w.add(path, n, "want a mapping, got %s", Describe(n))
		return
	}
	fields := Fields(v.Type())
	w.pairs(n, path, func(key string, k, val *yaml.Node) {
		p := Join(path, key)
		f, ok := fields[key]
		if !ok {
			w.add(p, k, "unknown key%s", suggest.Hint(key, slices.Sorted(maps.Keys(fields))))
			return
		}
		if w.OnKey != nil {
			w.OnKey(p, k.Line)
		}
		w.decode(val, v.FieldByIndex(f.Index), p, depth+1)
	})
}

func (w *walker) list(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.SequenceNode {
		w.add(path, n, "want a list, got %s", Describe(n))
		return
	}
	if w.MaxItems > 0 && len(n.Content) > w.MaxItems {
		w.add(path, n, "has %d items, more than %d", len(n.Content), w.MaxItems)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		w.decode(item, s.Index(i), Index(path, i), depth+1)
	}
	v.Set(s)
}

func (w *walker) mapping(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		w.add(path, n, "want a mapping, got %s", Describe(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		w.add(path, n, "cannot be decoded (internal: %s has keys that are not strings)", v.Type())
		return
	}
	if w.MaxItems > 0 && len(n.Content)/2 > w.MaxItems {
		w.add(path, n, "has %d keys, more than %d", len(n.Content)/2, w.MaxItems)
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(v.Type(), len(n.Content)/2))
	}
	w.pairs(n, path, func(key string, k, val *yaml.Node) {
		p := Join(path, key)
		if w.OnKey != nil {
			w.OnKey(p, k.Line)
		}
		e := reflect.New(v.Type().Elem()).Elem()
		w.decode(val, e, p, depth+1)
		v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
	})
}

// pairs calls visit for each key/value pair of mapping n that is usable:
// its key is a scalar that n does not hold twice, and the key is no anchor
// or alias. Every other pair is reported and skipped. A null key (`~:` or
// `null:`) is refused too: it is a slip, not a name.
func (w *walker) pairs(n *yaml.Node, path string, visit func(key string, k, v *yaml.Node)) {
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case Anchored(k):
			w.add(path, k, MsgAnchor)
		case k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null":
			w.add(path, k, "keys must be strings, got %s", Describe(k))
		case seen[k.Value]:
			w.add(Join(path, k.Value), k, MsgTwice)
		default:
			seen[k.Value] = true
			visit(k.Value, k, v)
		}
	}
}

// setScalar stores scalar n into v, a string, bool or number, and returns
// what is wrong, or "".
func setScalar(n *yaml.Node, v reflect.Value) string {
	tag := n.ShortTag()
	switch v.Kind() {
	case reflect.String:
		// Every scalar is a string: `version: 2` and `tag: true` are
		// common and mean what they say.
		v.SetString(n.Value)
		return ""
	case reflect.Bool:
		if tag != "!!bool" {
			return "want true or false, got " + Describe(n)
		}
		b, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			return "want true or false, got " + Describe(n)
		}
		v.SetBool(b)
		return ""
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if tag != "!!int" {
			return "want a whole number, got " + Describe(n)
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		// A plain int holds what an int32 does, on every platform.
		if err != nil || v.OverflowInt(i) || (v.Kind() == reflect.Int && (i > math.MaxInt32 || i < math.MinInt32)) {
			return Truncate(n.Value) + " is out of range"
		}
		v.SetInt(i)
		return ""
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if tag != "!!int" {
			return "want a whole number, got " + Describe(n)
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil || v.OverflowUint(u) {
			return Truncate(n.Value) + " is out of range (0 or more)"
		}
		v.SetUint(u)
		return ""
	case reflect.Float32, reflect.Float64:
		if tag != "!!float" && tag != "!!int" {
			return "want a number, got " + Describe(n)
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err != nil || v.OverflowFloat(f) {
			return Truncate(n.Value) + " is out of range"
		}
		v.SetFloat(f)
		return ""
	}
	return fmt.Sprintf("cannot be decoded (internal: %s)", v.Type())
}

// want names what a value of type t is written as.
func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	}
	return "a single value"
}

// Anchored reports whether n is an alias or carries an anchor.
func Anchored(n *yaml.Node) bool { return n.Kind == yaml.AliasNode || n.Anchor != "" }

// findAnchor returns the first node at or below n that is Anchored, or nil.
func findAnchor(n *yaml.Node) *yaml.Node {
	if Anchored(n) {
		return n
	}
	for _, c := range n.Content {
		if a := findAnchor(c); a != nil {
			return a
		}
	}
	return nil
}

// Describe names what a node holds, for "want X, got Y" errors: "a
// mapping", "a list", `string "web"`, "int 5", "null". Long values are cut
// short.
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!str":
			return "string " + strconv.Quote(Truncate(n.Value))
		case "!!null":
			return "null"
		default:
			return strings.TrimPrefix(tag, "!!") + " " + Truncate(n.Value)
		}
	}
	return "nothing"
}

// maxShown is the longest value an error repeats; a longer one is cut.
const maxShown = 40

// Truncate cuts s to the length an error may repeat.
func Truncate(s string) string {
	if len(s) > maxShown {
		return s[:maxShown] + "..."
	}
	return s
}

// Join is the path of key under path: "ports" and "http" make "ports.http".
// A key that would read ambiguously there (empty, or holding a dot, a space
// or a quote) is quoted: "meta" and "a.b" make `meta."a.b"`.
func Join(path, key string) string {
	if key == "" || strings.ContainsAny(key, ".[] \"") {
		key = strconv.Quote(Truncate(key))
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// Index is the path of item i of the list at path: "services[2]".
func Index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// Field is one key of a struct: the field it decodes into.
type Field struct {
	// Index is the field's index sequence, for reflect.Value.FieldByIndex
	// (more than one number for a field of an inline struct).
	Index []int
	// Type is the field's type.
	Type reflect.Type
}

// Fields maps each YAML key of struct type t to its field, as yaml.v3
// names them: the `yaml` tag's name, or the lower-cased field name when the
// tag gives none; "-" leaves a field out, and ",inline" lifts the keys of
// an embedded struct.
func Fields(t reflect.Type) map[string]Field {
	out := map[string]Field{}
	addFields(out, t, nil)
	return out
}

func addFields(out map[string]Field, t reflect.Type, prefix []int) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		inline := slices.Contains(strings.Split(opts, ","), "inline") && f.Type.Kind() == reflect.Struct
		if name == "-" || (!f.IsExported() && !(f.Anonymous && inline)) {
			continue
		}
		index := append(slices.Clone(prefix), i)
		if inline {
			addFields(out, f.Type, index)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = Field{Index: index, Type: f.Type}
	}
}

// ReadOne parses data, which must hold at most one YAML document, into its
// node tree. It returns nil for an input with no document (empty, or only
// comments). A panic inside the YAML library becomes an error: one bad
// input must never take the agent down.
func ReadOne(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := Next(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	switch err := Next(dec, &extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	case len(extra.Content) == 0 || extra.Content[0].ShortTag() == "!!null":
		// A `---` that ends the document, with nothing after it.
	default:
		return nil, &Error{Line: extra.Line, Msg: "a second YAML document follows the first (---); give one per file"}
	}
	return &doc, nil
}

// Next reads the next document of dec into n, turning a panic inside the
// YAML library into an error. At the end of the input it returns io.EOF,
// as yaml.v3 does.
func Next(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

var linePrefix = regexp.MustCompile(`^(yaml: )?line \d+: `)

// CleanMessage is the text of an error from yaml.v3 or an UnmarshalYAML
// method on one line, without the "yaml: " and "line N: " prefixes that
// the caller states in its own words.
func CleanMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = linePrefix.ReplaceAllString(m, "")
		}
		return strings.Join(msgs, "; ")
	}
	return strings.Join(strings.Fields(linePrefix.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "")), " ")
}
