package strictyaml

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// seconds is a type with its own rule, registered through Decoder.Types.
type seconds int

// dur implements yaml.Unmarshaler.
type dur time.Duration

func (d *dur) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration", n.Line, n.Value)
	}
	*d = dur(v)
	return nil
}

type inner struct {
	Port int    `yaml:"port"`
	Host string `yaml:"host"`
}

type embedded struct {
	Extra string `yaml:"extra"`
}

type doc struct {
	Name     string            `yaml:"name"`
	On       bool              `yaml:"on"`
	Count    int               `yaml:"count"`
	Big      int64             `yaml:"big"`
	Small    uint8             `yaml:"small"`
	Ratio    float64           `yaml:"ratio"`
	Inner    inner             `yaml:"inner"`
	Ptr      *inner            `yaml:"ptr"`
	List     []inner           `yaml:"list"`
	Tags     []string          `yaml:"tags"`
	Meta     map[string]string `yaml:"meta"`
	Wait     dur               `yaml:"wait"`
	Secs     seconds           `yaml:"secs"`
	Ignored  string            `yaml:"-"`
	embedded `yaml:",inline"`
}

var testDecoder = Decoder{
	MaxItems: 3,
	MaxDepth: 4,
	Types: map[reflect.Type]func(*yaml.Node, reflect.Value) string{
		reflect.TypeFor[seconds](): func(n *yaml.Node, v reflect.Value) string {
			if n.ShortTag() != "!!int" {
				return "want seconds, got " + Describe(n)
			}
			return setScalar(n, v)
		},
	},
}

func decode(t *testing.T, src string, out any) []*Error {
	t.Helper()
	n, err := ReadOne([]byte(src))
	if err != nil {
		t.Fatalf("ReadOne: %v", err)
	}
	if n == nil {
		return nil
	}
	return testDecoder.Decode(n, out)
}

func TestDecodeStoresEveryKind(t *testing.T) {
	src := `
name: 42
on: true
count: 0x10
big: 5000000000
small: 255
ratio: 1.5
inner: {port: 80, host: a}
ptr: {port: 81}
list: [{port: 1}, {port: 2}]
tags: [x, "y"]
meta: {a.b: c, d: 2}
wait: 1m
secs: 7
extra: lifted
`
	var d doc
	if errs := decode(t, src, &d); len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := doc{
		Name: "42", On: true, Count: 16, Big: 5000000000, Small: 255, Ratio: 1.5,
		Inner: inner{Port: 80, Host: "a"}, Ptr: &inner{Port: 81},
		List: []inner{{Port: 1}, {Port: 2}}, Tags: []string{"x", "y"},
		Meta: map[string]string{"a.b": "c", "d": "2"}, Wait: dur(time.Minute), Secs: 7,
		embedded: embedded{Extra: "lifted"},
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("decoded\n  %+v\nwant\n  %+v", d, want)
	}
}

// TestDecodeReports checks that each problem is reported with the key path
// and line, in words that say what was wanted.
func TestDecodeReports(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // each an Error() of the result, in order
	}{
		{"unknown key with hint", "nmae: x\n", []string{`line 1: nmae: unknown key (did you mean "name"?)`}},
		{"unknown nested key", "inner:\n  prot: 1\n", []string{`line 2: inner.prot: unknown key (did you mean "port"?)`}},
		{"unknown key far from all", "zzzzzz: 1\n", []string{`line 1: zzzzzz: unknown key`}},
		{"ignored field is unknown", "ignored: x\n", []string{`line 1: ignored: unknown key`}},
		{"duplicate key", "name: a\nname: b\n", []string{`line 2: name: appears twice`}},
		{"duplicate map key", "meta: {a: 1, a: 2}\n", []string{`line 1: meta.a: appears twice`}},
		{"anchor", "inner: &x {port: 1}\n", []string{`line 1: inner: ` + MsgAnchor}},
		{"alias in a list", "tags: [&a x, *a]\n", []string{`line 1: tags[0]: ` + MsgAnchor, `line 1: tags[1]: ` + MsgAnchor}},
		{"anchored key", "&k name: x\n", []string{`line 1: ` + MsgAnchor}},
		{"key not a string", "? [a]\n: 1\n", []string{`line 1: keys must be strings, got a list`}},
		{"null map key", "meta:\n  ~: x\n", []string{`line 2: meta: keys must be strings, got null`}},
		{"string for int", "count: many\n", []string{`line 1: count: want a whole number, got string "many"`}},
		{"float for int", "count: 1.5\n", []string{`line 1: count: want a whole number, got float 1.5`}},
		{"int beyond int32", "count: 3000000000\n", []string{`line 1: count: 3000000000 is out of range`}},
		{"uint8 overflow", "small: 256\n", []string{`line 1: small: 256 is out of range (0 or more)`}},
		{"negative uint", "small: -1\n", []string{`line 1: small: -1 is out of range (0 or more)`}},
		{"string for bool", "on: yes\n", []string{`line 1: on: want true or false, got string "yes"`}},
		{"mapping for string", "name: {a: 1}\n", []string{`line 1: name: want a string, got a mapping`}},
		{"list for mapping", "inner: [1]\n", []string{`line 1: inner: want a mapping, got a list`}},
		{"scalar for list", "tags: x\n", []string{`line 1: tags: want a list, got string "x"`}},
		{"unmarshaler error", "wait: soon\n", []string{`line 1: wait: "soon" is not a duration`}},
		{"type hook", "secs: ten\n", []string{`line 1: secs: want seconds, got string "ten"`}},
		{"too many items", "tags: [a, b, c, d]\n", []string{`line 1: tags: has 4 items, more than 3`}},
		{"too many keys", "meta: {a: 1, b: 2, c: 3, d: 4}\n", []string{`line 1: meta: has 4 keys, more than 3`}},
		{"list in a list item", "list: [{port: [1]}]\n", []string{`line 1: list[0].port: want a whole number, got a list`}},
		{"every problem at once", "nmae: x\ncount: x\ninner: {prot: 1}\n", []string{
			`line 1: nmae: unknown key (did you mean "name"?)`,
			`line 2: count: want a whole number, got string "x"`,
			`line 3: inner.prot: unknown key (did you mean "port"?)`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			errs := decode(t, tc.src, &d)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("errors\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
}

func TestMaxDepth(t *testing.T) {
	type node struct {
		Next *node `yaml:"next"`
	}
	src := strings.Repeat("{next: ", 10) + "null" + strings.Repeat("}", 10)
	n, err := ReadOne([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	errs := (&Decoder{MaxDepth: 5}).Decode(n, &node{})
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "nested too deeply") {
		t.Fatalf("errors %v, want one about nesting", errs)
	}
}

// TestMergeKeepsWhatIsNotSet: a second document on the same value changes
// only the keys it holds, and a null clears a pointer or list.
func TestMergeKeepsWhatIsNotSet(t *testing.T) {
	var d doc
	if errs := decode(t, "name: a\ncount: 1\nptr: {port: 1, host: h}\ntags: [x]\nmeta: {a: 1}\n", &d); errs != nil {
		t.Fatal(errs)
	}
	if errs := decode(t, "count: 2\nptr: {port: 2}\ntags: ~\nmeta: {b: 2}\nname:\n", &d); errs != nil {
		t.Fatal(errs)
	}
	want := doc{Name: "a", Count: 2, Ptr: &inner{Port: 2, Host: "h"}, Meta: map[string]string{"a": "1", "b": "2"}}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("merged %+v, want %+v", d, want)
	}
}

func TestOnKey(t *testing.T) {
	seen := map[string]int{}
	dec := Decoder{OnKey: func(path string, line int) { seen[path] = line }}
	n, err := ReadOne([]byte("name: a\nlist:\n  - port: 1\n  - host: b\nmeta: {x.y: z}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if errs := dec.Decode(n, &doc{}); errs != nil {
		t.Fatal(errs)
	}
	want := map[string]int{"name": 1, "list": 2, "list[0].port": 3, "list[1].host": 4, "meta": 5, `meta."x.y"`: 5}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("OnKey saw %v, want %v", seen, want)
	}
}

func TestReadOne(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"empty", "", ""},
		{"comments only", "# nothing\n", ""},
		{"one document", "a: 1\n", ""},
		{"trailing marker", "a: 1\n---\n", ""},
		{"two documents", "a: 1\n---\nb: 2\n", "line 2: a second YAML document"},
		{"syntax error", "a: [\n", "yaml: line"},
		{"unknown alias", "a: *x\n", "unknown anchor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadOne([]byte(tc.src))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestJoin(t *testing.T) {
	for _, tc := range []struct{ path, key, want string }{
		{"", "a", "a"}, {"a", "b", "a.b"}, {"meta", "a.b", `meta."a.b"`}, {"m", "", `m.""`}, {"m", "x[0]", `m."x[0]"`},
	} {
		if got := Join(tc.path, tc.key); got != tc.want {
			t.Errorf("Join(%q, %q) = %q, want %q", tc.path, tc.key, got, tc.want)
		}
	}
}

func TestCleanMessage(t *testing.T) {
	if got := CleanMessage(errors.New("yaml: line 3: found character that cannot start any token")); got != "found character that cannot start any token" {
		t.Errorf("CleanMessage = %q", got)
	}
	var v struct{ A int }
	err := yaml.Unmarshal([]byte("a: x\n"), &v)
	if got := CleanMessage(err); strings.Contains(got, "line") || !strings.Contains(got, "cannot unmarshal") {
		t.Errorf("CleanMessage(TypeError) = %q", got)
	}
}

func TestDecodeWantsAPointer(t *testing.T) {
	n, _ := ReadOne([]byte("a: 1\n"))
	if errs := (&Decoder{}).Decode(n, doc{}); len(errs) != 1 {
		t.Fatalf("Decode into a non-pointer: %v", errs)
	}
}

// FuzzDecode: no input makes the walker panic, and what it accepts is what
// yaml.v3 decodes too.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"name: a\ncount: 1\ninner: {port: 2}\n",
		"list: [{port: 1}, {host: b}]\nmeta: {a: b}\n",
		"tags: [&a x, *a]\n",
		"wait: 1s\nsecs: 3\nextra: e\n",
		"? [a]\n: 1\n",
		"ptr: {port: 1}\nptr: ~\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ReadOne(data)
		if err != nil || n == nil {
			return
		}
		var d doc
		if errs := testDecoder.Decode(n, &d); len(errs) > 0 {
			for _, e := range errs {
				if e.Msg == "" {
					t.Fatalf("an error without a message: %+v", e)
				}
			}
			return
		}
		var loose doc
		if err := n.Decode(&loose); err != nil {
			t.Fatalf("strict decode accepted what yaml.v3 refuses: %v\n%s", err, data)
		}
	})
}
