package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrBadDefinition wraps every error of DecodeServiceDefinition that is about
// the document's syntax or shape rather than a field's value.
var ErrBadDefinition = errors.New("cannot decode service definition")

// MaxDefinitionSize is the largest definition file DecodeServiceDefinition
// reads (1 MiB), as for the API's request bodies.
const MaxDefinitionSize = 1 << 20

// DecodeServiceDefinition reads one service definition from JSON (when the
// document starts with "{") or YAML, refusing unknown keys, and validates it.
// Its errors name the key or field and say what was wrong; decoding errors
// wrap ErrBadDefinition and validation errors are *ValidationError.
func DecodeServiceDefinition(data []byte) (ServiceDefinition, error) {
	var def ServiceDefinition
	if len(data) > MaxDefinitionSize {
		return def, fmt.Errorf("%w: %d bytes, at most %d are allowed", ErrBadDefinition, len(data), MaxDefinitionSize)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return def, fmt.Errorf("%w: the document is empty", ErrBadDefinition)
	}
	var err error
	if trimmed[0] == '{' {
		err = decodeJSON(trimmed, &def)
	} else {
		err = decodeYAML(data, &def)
	}
	if err != nil {
		return ServiceDefinition{}, err
	}
	if err := def.Validate(); err != nil {
		return ServiceDefinition{}, err
	}
	return def, nil
}

func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("%w: JSON ends too early", ErrBadDefinition)
		case errors.As(err, &se):
			return fmt.Errorf("%w: malformed JSON at byte %d: %v", ErrBadDefinition, se.Offset, se)
		case errors.As(err, &te):
			return fmt.Errorf("%w: field %q: want %s, got JSON %s", ErrBadDefinition, te.Field, te.Type, te.Value)
		default:
			// Unknown fields: `json: unknown field "x"`.
			return fmt.Errorf("%w: %s", ErrBadDefinition, strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadDefinition)
	}
	return nil
}

func decodeYAML(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: the document is empty", ErrBadDefinition)
		}
		return fmt.Errorf("%w: %s", ErrBadDefinition, oneLineYAMLError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the file holds more than one YAML document", ErrBadDefinition)
	}
	return nil
}

// oneLineYAMLError flattens yaml.v3's multi-line TypeError into one line.
func oneLineYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		parts := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			parts[i] = strings.TrimSpace(e)
		}
		return strings.Join(parts, "; ")
	}
	return strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), "yaml: ")), " ")
}
