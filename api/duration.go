package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a string such as "30s" or "1m30s"
// in JSON and YAML. A bare number is refused: "30" could mean seconds or
// nanoseconds, and guessing wrong silently is worse than an error.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d as time.Duration does ("1m30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a JSON string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON reads a JSON string such as "30s". Its errors are
// *json.UnmarshalTypeError, so that encoding/json adds the field path.
func (d *Duration) UnmarshalJSON(b []byte) error {
	bad := func(what string) error {
		return &json.UnmarshalTypeError{
			Value: what + ` (a duration is a string with a unit, such as "30s")`,
			Type:  reflect.TypeFor[Duration](),
		}
	}
	if string(b) == "null" {
		return nil // as for every JSON type: null leaves the value alone
	}
	if len(b) == 0 || b[0] != '"' {
		return bad(string(b))
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return bad(string(b))
	}
	v, err := parseDuration(s)
	if err != nil {
		return bad(strconv.Quote(s))
	}
	*d = v
	return nil
}

// MarshalYAML writes d as a YAML string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a YAML string such as 30s; its errors carry the line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return fmt.Errorf("line %d: duration %q must be a string with a unit, such as \"30s\"", n.Line, n.Value)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: duration %q must be a string with a unit, such as \"30s\"", n.Line, n.Value)
	}
	*d = v
	return nil
}

// parseDuration accepts what time.ParseDuration accepts, except a bare
// number other than "0".
func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	return Duration(v), nil
}
