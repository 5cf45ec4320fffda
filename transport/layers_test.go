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
// l4 and tunnel, l4 uses tunnel, and tunnel uses neither, so that no
// handler reaches back into Transport.
func TestLayers(t *testing.T) {
	const mod = "github.com/meshwork/meshwork/transport"
	forbidden := map[string][]string{
		"tunnel": {mod, mod + "/l4"},
		"l4":     {mod},
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
