// Package conversations_test checks the prose against the code: a Go name that a page of the docs puts in
// backticks must exist, so renaming or removing a function, type, method or field leaves no stale page
// behind.
package conversations_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// modulePath is this module's import path: imports below it are the module's own packages, whose names
// are checked; any other import names a package whose names are not (it is not this project's code).
const modulePath = "github.com/convsync/conversations"

// external are capitalised names the docs may put in backticks that are not Go names of this module,
// each with the reason. Keep it short: a name that should exist in the code does not belong here.
var external = map[string]string{
	"Allow":          "an HTTP response header",
	"Bob":            "an example uid",
	"DescribeGroups": "a Kafka protocol request (kafka-go's Client.DescribeGroups)",
	"VmHWM":          "a field of /proc/PID/status",
	"WuKongIM":       "the IM server whose API this service answers",
	"envFrom":        "a Kubernetes field the manifests leave out on purpose (deploy/k8s/README.md)",
}

// TestDocsNameExistingIdentifiers fails when a Markdown page names, in backticks, a Go identifier that no
// Go file of the repository declares. What counts as a Go identifier is decided by goNameIn; what it
// names must resolve as resolve says, or be a key or an alert name of the repository's YAML (Kubernetes
// fields such as `preStop`, alert names such as `ConversationsPodNotReady`): those are checked against the
// manifests instead.
func TestDocsNameExistingIdentifiers(t *testing.T) {
	code := indexCode(t, ".")
	manifests := indexYAML(t, ".")
	var pages []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			pages = append(pages, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) < 5 {
		t.Fatalf("found %d Markdown pages (%v): the walk is wrong", len(pages), pages)
	}
	checked := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, span := range codeSpans(string(b)) {
			name, ok := goNameIn(span.text, code)
			if !ok {
				continue
			}
			checked++
			if !code.resolve(name) && !manifests[name] {
				t.Errorf("%s:%d: `%s` names no Go declaration of this repository (renamed or removed?)", page, span.line, span.text)
			}
		}
	}
	// The rule must keep applying to the docs: if a change of goNameIn made it skip nearly everything,
	// the test would pass while checking nothing.
	if checked < 100 {
		t.Errorf("only %d backticked Go names checked across %d pages: goNameIn skips too much", checked, len(pages))
	}
}

// TestGoNameIn pins which backticked spans are taken for Go names and how they resolve.
func TestGoNameIn(t *testing.T) {
	code := &codeIndex{
		packages: map[string]map[string]bool{"conversation": {"Select": true, "Row": true}, "mysql": {"keysTable": true}},
		members:  map[string]map[string]bool{"Row": {"UID": true}, "Store": {"ApplyBatch": true}},
		top:      map[string]bool{"Select": true, "Row": true, "keysTable": true, "Store": true},
		external: map[string]bool{"kafkago": true, "sqlx": true},
	}
	for _, tc := range []struct {
		span    string
		checked bool // taken for a Go name
		exists  bool
	}{
		{"conversation.Select", true, true},
		{"conversation.Gone", true, false},
		{"conversation.Row.UID", true, true},
		{"conversation.Row.Gone", true, false},
		{"mysql.keysTable", true, true},
		{"Store.ApplyBatch", true, true},
		{"Store.ApplyBatch()", true, true},
		{"Store.Gone", true, false},
		{"Select", true, true},
		{"Gone", true, false},
		{"goneToo", true, false},
		{"conversation", true, true}, // a package named alone
		{"kafkago.Message", false, false},
		{"WuKongIM", false, false},
		{"SYNC_CACHE_MAX_AGE", false, false},        // an environment variable
		{"SELECT", false, false},                    // SQL
		{"conv_api_rows_cache_total", false, false}, // a metric
		{"large.rows_per_message", false, false},    // a bench figure
		{"channels.members", false, false},          // table.column
		{"is_deleted", false, false},                // a column
		{"plan.go", false, false},                   // a file
		{"internal/mysql", false, false},            // a path
		{"X-Conv-Outage", false, false},             // a header
		{"max(now, last + 1)", false, false},        // an expression
		{"version", false, false},                   // a plain word: JSON field, column
	} {
		t.Run(tc.span, func(t *testing.T) {
			name, checked := goNameIn(tc.span, code)
			if checked != tc.checked {
				t.Fatalf("goNameIn(%q) checked = %v, want %v", tc.span, checked, tc.checked)
			}
			if checked && code.resolve(name) != tc.exists {
				t.Fatalf("resolve(%q) = %v, want %v", name, !tc.exists, tc.exists)
			}
		})
	}
}

type span struct {
	text string
	line int
}

var (
	fence        = regexp.MustCompile("^\\s*(```|~~~)")
	inline       = regexp.MustCompile("`([^`]+)`")
	dotted       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
	allCaps      = regexp.MustCompile(`^[A-Z0-9_]+$`)
	majorVersion = regexp.MustCompile(`^v[0-9]+$`)
	fileExts     = []string{"go", "md", "sql", "yaml", "yml", "json", "sh", "txt", "pem", "mod", "sum", "toml"}
)

// codeSpans returns the inline code spans of a Markdown page, outside fenced blocks.
func codeSpans(md string) []span {
	var out []span
	inFence := false
	for i, line := range strings.Split(md, "\n") {
		if fence.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		for _, m := range inline.FindAllStringSubmatch(line, -1) {
			out = append(out, span{text: m[1], line: i + 1})
		}
	}
	return out
}

// goNameIn says whether a backticked span names a Go identifier of this repository, and returns it.
// The rule:
//   - only dotted identifiers are Go names (`pkg.Name`, `Type.Method`, `pkg.Type.Field`, `Name`, an
//     optional trailing `()`); paths, flags, expressions, headers and JSON are not;
//   - ALL_CAPS names are environment variables or SQL, not Go (Go constants here are MixedCaps);
//   - names with an underscore are columns, metrics, JSON fields or bench figures (Go names here have
//     none);
//   - a last part that is a file extension makes a file name (`plan.go`);
//   - a first part that is another module's import name (`kafkago.Message`) is not this module's code;
//   - a first part that is a package of this module is always checked (`purge.LateGrace`);
//   - otherwise a name is checked when it has an upper-case letter (`ApplyBatch`, `statusOf`): a word
//     all in lower case (`version`, `channels.members`) is prose, SQL or a command, not checkable;
//   - the few capitalised names that are not this module's (a Kafka request) are listed in external.
func goNameIn(text string, code *codeIndex) (string, bool) {
	name := strings.TrimSuffix(text, "()")
	if !dotted.MatchString(name) || allCaps.MatchString(name) || strings.Contains(name, "_") {
		return "", false
	}
	parts := strings.Split(name, ".")
	if len(parts) > 1 && slices.Contains(fileExts, parts[len(parts)-1]) {
		return "", false
	}
	if _, ok := external[parts[0]]; ok {
		return "", false
	}
	if _, ok := code.packages[parts[0]]; ok {
		return name, true
	}
	if code.external[parts[0]] {
		return "", false
	}
	if strings.ToLower(name) == name {
		return "", false
	}
	return name, true
}

// codeIndex is what the repository's Go files declare.
type codeIndex struct {
	// packages maps a package name to its top-level names (functions, types, variables, constants).
	packages map[string]map[string]bool
	// members maps a type name to its methods, fields and interface methods, whatever its package.
	members map[string]map[string]bool
	// top holds every top-level name of every package.
	top map[string]bool
	// external holds the names under which other modules' packages are imported.
	external map[string]bool
}

// resolve says whether a dotted name is declared: `pkg`, `pkg.Name`, `pkg.Type.Member`, `Name` (top
// level in some package, or a method or field of some type), `Type.Member`.
func (c *codeIndex) resolve(name string) bool {
	parts := strings.Split(name, ".")
	if pkg, ok := c.packages[parts[0]]; ok {
		switch len(parts) {
		case 1:
			return true
		case 2:
			return pkg[parts[1]]
		case 3:
			return pkg[parts[1]] && c.members[parts[1]][parts[2]]
		}
		return false
	}
	switch len(parts) {
	case 1:
		if c.top[name] {
			return true
		}
		for _, m := range c.members {
			if m[name] {
				return true
			}
		}
		return false
	case 2:
		return c.members[parts[0]][parts[1]]
	}
	return false
}

var (
	yamlKey   = regexp.MustCompile(`(?m)^[ \t]*(?:- )?([A-Za-z][A-Za-z0-9]*):`)
	yamlAlert = regexp.MustCompile(`(?m)^[ \t]*- alert: ([A-Za-z][A-Za-z0-9]*)`)
)

// indexYAML returns the keys and alert names of every YAML file below root (hidden folders aside).
func indexYAML(t *testing.T, root string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, re := range []*regexp.Regexp{yamlKey, yamlAlert} {
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				names[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// indexCode parses every Go file below root (hidden folders aside) and records its declarations.
func indexCode(t *testing.T, root string) *codeIndex {
	t.Helper()
	c := &codeIndex{packages: map[string]map[string]bool{}, members: map[string]map[string]bool{},
		top: map[string]bool{}, external: map[string]bool{}}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		c.add(f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *codeIndex) member(typ, name string) {
	if c.members[typ] == nil {
		c.members[typ] = map[string]bool{}
	}
	c.members[typ][name] = true
}

func (c *codeIndex) add(f *ast.File) {
	pkgName := strings.TrimSuffix(f.Name.Name, "_test")
	pkg := c.packages[pkgName]
	if pkg == nil {
		pkg = map[string]bool{}
		c.packages[pkgName] = pkg
	}
	declare := func(name string) {
		pkg[name] = true
		c.top[name] = true
	}
	for _, imp := range f.Imports {
		path, err := strconv.Unquote(imp.Path.Value)
		if err != nil || path == modulePath || strings.HasPrefix(path, modulePath+"/") {
			continue
		}
		name := importName(path)
		if imp.Name != nil {
			name = imp.Name.Name
		}
		c.external[name] = true
	}
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				declare(d.Name.Name)
				continue
			}
			if typ := receiverType(d.Recv.List[0].Type); typ != "" {
				c.member(typ, d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					declare(s.Name.Name)
					c.addMembers(s.Name.Name, s.Type)
				case *ast.ValueSpec:
					for _, n := range s.Names {
						declare(n.Name)
					}
				}
			}
		}
	}
}

// addMembers records a struct's fields or an interface's methods under the type's name.
func (c *codeIndex) addMembers(typ string, expr ast.Expr) {
	var fields *ast.FieldList
	switch e := expr.(type) {
	case *ast.StructType:
		fields = e.Fields
	case *ast.InterfaceType:
		fields = e.Methods
	default:
		return
	}
	for _, f := range fields.List {
		for _, n := range f.Names {
			c.member(typ, n.Name)
		}
		if len(f.Names) == 0 { // embedded: its name is a field name
			if name := receiverType(f.Type); name != "" {
				c.member(typ, name)
			}
		}
	}
}

// receiverType names the type of a receiver or embedded field: T, *T, T[P], pkg.T.
func receiverType(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return receiverType(e.X)
	case *ast.IndexExpr:
		return receiverType(e.X)
	case *ast.IndexListExpr:
		return receiverType(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}

// importName is the name a package is imported under by default: its path's last element, a major
// version suffix (/v5) and a "go-" prefix or "-go" suffix aside.
func importName(path string) string {
	elems := strings.Split(path, "/")
	name := elems[len(elems)-1]
	if len(elems) > 1 && majorVersion.MatchString(name) {
		name = elems[len(elems)-2]
	}
	name = strings.TrimPrefix(strings.TrimSuffix(name, "-go"), "go-")
	return strings.NewReplacer(".", "", "-", "").Replace(name)
}
