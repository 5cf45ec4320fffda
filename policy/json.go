package policy

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// MarshalJSON writes the flat form: kind, name, then the spec's fields.
func (d Document) MarshalJSON() ([]byte, error) {
	head, err := json.Marshal(struct {
		Kind Kind   `json:"kind"`
		Name string `json:"name"`
	}{d.Kind, d.Name})
	if err != nil {
		return nil, err
	}
	if d.Spec == nil {
		return head, nil
	}
	body, err := json.Marshal(d.Spec)
	if err != nil {
		return nil, err
	}
	return mergeObjects(head, body), nil
}

// mergeObjects joins two JSON objects' members into one object.
func mergeObjects(a, b []byte) []byte {
	b = bytes.TrimSpace(b)
	if len(b) <= 2 { // "{}"
		return a
	}
	out := make([]byte, 0, len(a)+len(b))
	out = append(out, a[:len(a)-1]...)
	out = append(out, ',')
	return append(out, b[1:]...)
}

// UnmarshalJSON reads the flat form written by MarshalJSON. It is meant for
// JSON this package wrote (Raft entries, caches on disk, RPC answers):
// unknown fields are ignored there, and the result is not validated. Outside
// input goes through Parse.
func (d *Document) UnmarshalJSON(b []byte) error {
	var head struct {
		Kind Kind   `json:"kind"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	spec := newSpec(head.Kind)
	if spec == nil {
		return fmt.Errorf("%w: kind %q is unknown", ErrInvalid, head.Kind)
	}
	if err := json.Unmarshal(b, spec); err != nil {
		return fmt.Errorf("%s %q: %w", head.Kind, head.Name, err)
	}
	*d = Document{Kind: head.Kind, Name: head.Name, Spec: spec}
	return nil
}

type entryIndexes struct {
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// MarshalJSON writes the document's flat form with create_index and
// modify_index added.
func (e Entry) MarshalJSON() ([]byte, error) {
	doc, err := e.Document.MarshalJSON()
	if err != nil {
		return nil, err
	}
	idx, _ := json.Marshal(entryIndexes{e.CreateIndex, e.ModifyIndex})
	return mergeObjects(doc, idx), nil
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (e *Entry) UnmarshalJSON(b []byte) error {
	if err := e.Document.UnmarshalJSON(b); err != nil {
		return err
	}
	var idx entryIndexes
	if err := json.Unmarshal(b, &idx); err != nil {
		return err
	}
	e.CreateIndex, e.ModifyIndex = idx.CreateIndex, idx.ModifyIndex
	return nil
}

// MarshalYAML writes the form Parse reads, so that `policy get` output can be
// edited and applied again.
func (d Document) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.MappingNode}
	n.Content = append(n.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Value: "kind"}, &yaml.Node{Kind: yaml.ScalarNode, Value: string(d.Kind)},
		// Tagged as a string so that the encoder quotes a name YAML would
		// read as something else, such as "0" or "true".
		&yaml.Node{Kind: yaml.ScalarNode, Value: "name"}, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: d.Name, Style: quoteStyle(d.Name)})
	if d.Spec == nil {
		return n, nil
	}
	// Go through JSON so that omitempty and Duration strings apply, then
	// back through YAML keeping the struct's field order.
	b, err := json.Marshal(d.Spec)
	if err != nil {
		return nil, err
	}
	var body yaml.Node
	if err := yaml.Unmarshal(b, &body); err != nil {
		return nil, err
	}
	if len(body.Content) == 1 && body.Content[0].Kind == yaml.MappingNode {
		m := body.Content[0]
		clearStyle(m)
		n.Content = append(n.Content, m.Content...)
	}
	return n, nil
}

func quoteStyle(s string) yaml.Style {
	if s == Wildcard {
		return yaml.DoubleQuotedStyle
	}
	return 0
}

// clearStyle turns the flow (JSON) style into block style, keeping strings
// quoted only where YAML needs it.
func clearStyle(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && n.Value == Wildcard {
		n.Style = yaml.DoubleQuotedStyle
	}
	for _, c := range n.Content {
		clearStyle(c)
	}
}

// EncodeYAML writes documents as a multi-document YAML stream that Parse
// reads back.
func EncodeYAML(docs []Document) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for i := range docs {
		if err := enc.Encode(docs[i]); err != nil {
			return nil, err
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
