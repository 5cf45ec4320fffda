package monitoring

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The module graph has no PromQL parser (Prometheus's own would bring the
// whole server in), and promtool checks syntax but not names. This scanner
// finds what the name checks need in an expression that promtool has
// parsed: each series selector with its matchers, and each label of a by,
// without, on or ignoring list.

// matcher is one label matcher of a selector: name, operator, value.
type matcher struct{ Name, Op, Value string }

// selector is one series selector: a metric name and its matchers.
type selector struct {
	Metric   string
	Matchers []matcher
}

// queryRefs is what one expression refers to.
type queryRefs struct {
	Selectors []selector
	Grouping  []string // labels of by, without, on, ignoring, group_left, group_right
}

var errQuery = errors.New("query")

// keywords are the identifiers of PromQL that are not metric names and
// need no parentheses right after them: aggregations (sum by (x) (...)),
// binary operators and modifiers, and the float literals.
var keywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"inf": true, "nan": true,
}

// groupingKeywords take a list of label names in parentheses.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// scanQuery returns the selectors and grouping labels of expr, or an error
// that names what it could not read (an unterminated string, matcher list
// or range, or a Grafana variable left in the expression).
func scanQuery(expr string) (queryRefs, error) {
	var refs queryRefs
	s := expr
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	ident := func() string {
		j := i
		for i < len(s) && (isIdentStart(s[i]) || (i > j && s[i] >= '0' && s[i] <= '9')) {
			i++
		}
		return s[j:i]
	}
	str := func() (string, error) {
		q := s[i]
		j := i + 1
		var b strings.Builder
		for j < len(s) && s[j] != q {
			if s[j] == '\\' && q != '`' && j+1 < len(s) {
				j++
			}
			b.WriteByte(s[j])
			j++
		}
		if j >= len(s) {
			return "", fmt.Errorf("%w: %q: unterminated string at offset %d", errQuery, expr, i)
		}
		i = j + 1
		return b.String(), nil
	}
	matchers := func() ([]matcher, error) {
		start := i
		i++ // {
		var ms []matcher
		for {
			skipSpace()
			if i >= len(s) {
				return nil, fmt.Errorf("%w: %q: unterminated matcher list at offset %d", errQuery, expr, start)
			}
			if s[i] == '}' {
				i++
				return ms, nil
			}
			if s[i] == ',' {
				i++
				continue
			}
			if !isIdentStart(s[i]) {
				return nil, fmt.Errorf("%w: %q: want a label name at offset %d", errQuery, expr, i)
			}
			name := ident()
			skipSpace()
			op := ""
			for _, o := range []string{"=~", "!~", "!=", "="} {
				if strings.HasPrefix(s[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("%w: %q: want a matcher operator after %s", errQuery, expr, name)
			}
			i += len(op)
			skipSpace()
			if i >= len(s) || !strings.ContainsRune("\"'`", rune(s[i])) {
				return nil, fmt.Errorf("%w: %q: want a quoted value after %s%s", errQuery, expr, name, op)
			}
			v, err := str()
			if err != nil {
				return nil, err
			}
			ms = append(ms, matcher{name, op, v})
		}
	}
	for i < len(s) {
		c := s[i]
		switch {
		case strings.ContainsRune(" \t\r\n", rune(c)):
			i++
		case c == '"' || c == '\'' || c == '`':
			if _, err := str(); err != nil {
				return refs, err
			}
		case c == '$':
			return refs, fmt.Errorf("%w: %q: variable left in the expression at offset %d", errQuery, expr, i)
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return refs, fmt.Errorf("%w: %q: unterminated range at offset %d", errQuery, expr, i)
			}
			if strings.ContainsRune(s[i:i+j], '$') {
				return refs, fmt.Errorf("%w: %q: variable left in the range at offset %d", errQuery, expr, i)
			}
			i += j + 1
		case c == '{':
			ms, err := matchers()
			if err != nil {
				return refs, err
			}
			refs.Selectors = append(refs.Selectors, selectorOf("", ms))
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdentStart(s[i]) || s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			name := ident()
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case groupingKeywords[name]:
				if next != '(' {
					continue // group_left with no list
				}
				j := strings.IndexByte(s[i:], ')')
				if j < 0 {
					return refs, fmt.Errorf("%w: %q: unterminated %s list", errQuery, expr, name)
				}
				for _, l := range strings.Split(s[i+1:i+j], ",") {
					l = strings.TrimSpace(l)
					if l == "" {
						continue
					}
					if !isLabelName(l) {
						return refs, fmt.Errorf("%w: %q: %q in the %s list is not a label name", errQuery, expr, l, name)
					}
					refs.Grouping = append(refs.Grouping, l)
				}
				i += j + 1
			case keywords[strings.ToLower(name)], next == '(':
				// an aggregation, operator or function
			case next == '{':
				ms, err := matchers()
				if err != nil {
					return refs, err
				}
				refs.Selectors = append(refs.Selectors, selectorOf(name, ms))
			default:
				refs.Selectors = append(refs.Selectors, selector{Metric: name})
			}
		default:
			i++ // operators, parentheses, commas
		}
	}
	return refs, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isLabelName(l string) bool {
	for k := 0; k < len(l); k++ {
		if !(isIdentStart(l[k]) && l[k] != ':' || k > 0 && l[k] >= '0' && l[k] <= '9') {
			return false
		}
	}
	return l != ""
}

// selectorOf takes the metric name from a __name__ matcher when the
// selector has no name before its braces.
func selectorOf(name string, ms []matcher) selector {
	sel := selector{Metric: name}
	for _, m := range ms {
		if m.Name == "__name__" && m.Op == "=" && name == "" {
			sel.Metric = m.Value
			continue
		}
		sel.Matchers = append(sel.Matchers, m)
	}
	return sel
}

func TestScanQuery(t *testing.T) {
	tests := []struct {
		name string
		expr string
		want queryRefs
	}{
		{"bare metric", "meshwork_raft_is_leader", queryRefs{Selectors: []selector{{Metric: "meshwork_raft_is_leader"}}}},
		{"aggregation with grouping and matchers",
			`sum by (destination, le) (rate(x_bucket{direction="inbound", source!~"a,b}"}[5m]))`,
			queryRefs{
				Selectors: []selector{{Metric: "x_bucket", Matchers: []matcher{{"direction", "=", "inbound"}, {"source", "!~", "a,b}"}}}},
				Grouping:  []string{"destination", "le"},
			}},
		{"functions, numbers and operators are not metrics",
			`histogram_quantile(0.99, a) > 4 * 3600 or vector(0) and on (instance) group_left b offset 5m`,
			queryRefs{Selectors: []selector{{Metric: "a"}, {Metric: "b"}}, Grouping: []string{"instance"}}},
		{"aggregation after its argument", `count(up == 0) without (job)`,
			queryRefs{Selectors: []selector{{Metric: "up"}}, Grouping: []string{"job"}}},
		{"__name__ matcher", `{__name__="m", a="b"}`,
			queryRefs{Selectors: []selector{{Metric: "m", Matchers: []matcher{{"a", "=", "b"}}}}}},
		{"escaped quote", `m{a="x\"y"}`,
			queryRefs{Selectors: []selector{{Metric: "m", Matchers: []matcher{{"a", "=", `x"y`}}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scanQuery(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("scanQuery(%q)\n got %+v\nwant %+v", tc.expr, got, tc.want)
			}
		})
	}
}

func TestScanQueryRefusesWhatItCannotRead(t *testing.T) {
	for _, expr := range []string{
		`m{a="b"`,
		`m{a="b}`,
		`rate(m[5m)`,
		`rate(m[$__rate_interval])`,
		`m{a}`,
		`m{a=b}`,
		`sum by (a (m)`,
	} {
		if _, err := scanQuery(expr); !errors.Is(err, errQuery) {
			t.Errorf("scanQuery(%q): err %v, want errQuery", expr, err)
		}
	}
}
