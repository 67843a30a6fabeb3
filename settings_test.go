package conversations_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestSettingsDefaultAlike fails when an environment variable that several binaries read has different
// defaults in them (envDefault tags): MYSQL_DSN, KAFKA_TOPIC and the like name one deployment's
// settings, so a binary that defaulted one differently would silently work on another database or
// topic. Defaults that belong to a package are that package's constants instead (projector.Rules,
// cmd/api's packageDefaults), with no tag to drift.
func TestSettingsDefaultAlike(t *testing.T) {
	type decl struct {
		where, def string
	}
	seen := map[string][]decl{}
	fset := token.NewFileSet()
	for _, root := range []string{"cmd", "internal"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				field, ok := n.(*ast.Field)
				if !ok || field.Tag == nil {
					return true
				}
				raw, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					return true
				}
				tag := reflect.StructTag(raw)
				name, _, _ := strings.Cut(tag.Get("env"), ",")
				if name == "" {
					return true
				}
				if def, ok := tag.Lookup("envDefault"); ok {
					seen[name] = append(seen[name], decl{where: fset.Position(field.Pos()).String(), def: def})
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(seen["MYSQL_DSN"]) < 2 {
		t.Fatalf("MYSQL_DSN's default found %d times: the scan is wrong", len(seen["MYSQL_DSN"]))
	}
	for name, decls := range seen {
		for _, d := range decls[1:] {
			if d.def != decls[0].def {
				t.Errorf("%s defaults to %q at %s but %q at %s", name, decls[0].def, decls[0].where, d.def, d.where)
			}
		}
	}
}
