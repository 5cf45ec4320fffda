package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/meshwork/meshwork/agent/config"
	"github.com/meshwork/meshwork/internal/strictyaml"
)

const reference = "../../../docs/configuration.md"

// TestReferenceIsCurrent fails when docs/configuration.md is not what the
// comments of agent/config make: a key added, a default changed.
func TestReferenceIsCurrent(t *testing.T) {
	want, err := generate("..")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(reference)
	if err != nil {
		t.Fatalf("%v; make it with: %s", err, Command)
	}
	if string(got) != string(want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		line := 0
		for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
			line++
		}
		t.Fatalf("docs/configuration.md is out of date (first difference at line %d); regenerate it with: %s", line+1, Command)
	}
}

// TestEveryKeyIsDocumented: every key the loader accepts has its row, found
// by walking the Config type as the loader does.
func TestEveryKeyIsDocumented(t *testing.T) {
	b, err := generate("..")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	// A struct met again (service, check) has the rows of the first.
	seen := map[reflect.Type]bool{}
	var walk func(tp reflect.Type, prefix string)
	walk = func(tp reflect.Type, prefix string) {
		if seen[tp] {
			return
		}
		seen[tp] = true
		fields := strictyaml.Fields(tp)
		// In the order of the struct, as the reference lists them.
		keys := slices.SortedFunc(maps.Keys(fields), func(a, b string) int {
			return slices.Compare(fields[a].Index, fields[b].Index)
		})
		for _, key := range keys {
			f := fields[key]
			path := prefix + key
			if !strings.Contains(doc, "| `"+path+"` |") {
				t.Errorf("key %s has no row", path)
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct:
				walk(ft, path+".")
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), path+"[].")
			}
		}
	}
	walk(reflect.TypeFor[config.Config](), "")
	if n := strings.Count(doc, "\n| `"); n < 60 {
		t.Errorf("only %d rows", n)
	}
}

func TestSplitDoc(t *testing.T) {
	tests := []struct {
		comment, def, desc string
	}{
		{"Port is the port. Default: 8500.", "8500", "`port` is the port."},
		{"Domain is the domain. Default: \"mesh.\".", `"mesh."`, "`domain` is the domain."},
		{"Left is how long. Default: 30m, or less (at most x. y). More text.", "30m, or less (at most x. y)", "`left` is how long. More text."},
		{"Name is required.", "—", "`name` is required."},
		{"Key, base64, is a key. Default: none, and it warns.", "none, and it warns", "`key`, base64, is a key."},
		{"Key text first. Default: x", "x", "`key` text first."},
		{"A comment that names no field. Default: y", "y", "A comment that names no field."},
	}
	for _, tc := range tests {
		name := strings.TrimSuffix(strings.Fields(tc.comment)[0], ",")
		if name == "A" {
			name = "Field"
		}
		key := strings.ToLower(name)
		f := fieldWithDoc(t, name, tc.comment)
		def, desc := splitDoc(f, key)
		if def != tc.def || desc != tc.desc {
			t.Errorf("splitDoc(%q) = %q, %q; want %q, %q", tc.comment, def, desc, tc.def, tc.desc)
		}
	}
}

// fieldWithDoc parses a struct with one field, name, commented doc.
func fieldWithDoc(t *testing.T, name, doc string) *ast.Field {
	t.Helper()
	src := "package p\ntype T struct {\n// " + doc + "\n" + name + " string `yaml:\"x\"`\n}\n"
	f, err := parser.ParseFile(token.NewFileSet(), "p.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	return f.Decls[0].(*ast.GenDecl).Specs[0].(*ast.TypeSpec).Type.(*ast.StructType).Fields.List[0]
}

func TestCell(t *testing.T) {
	if got := cell("a <b> | `c <d> | e`"); got != "a &lt;b&gt; \\| `c <d> \\| e`" {
		t.Errorf("cell = %q", got)
	}
}
