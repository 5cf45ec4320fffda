package transport

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayers enforces the dependency rule of the split: transport uses
// l4, l7 and tunnel; the handlers l4 and l7 use tunnel and never each
// other; tunnel uses none of them, so that no handler reaches back into
// Transport.
func TestLayers(t *testing.T) {
	const mod = "github.com/meshwork/meshwork/transport"
	forbidden := map[string][]string{
		"tunnel": {mod, mod + "/l4", mod + "/l7"},
		"l4":     {mod, mod + "/l7"},
		"l7":     {mod, mod + "/l4"},
	}
	for dir, bad := range forbidden {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				for _, b := range bad {
					if path == b {
						t.Errorf("%s imports %s", f, path)
					}
				}
			}
		}
	}
}
