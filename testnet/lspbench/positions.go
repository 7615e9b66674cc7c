package main

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// position is an identifier in the module: a call of a function defined
// in another file of its package. Lines and columns are 1-based; the
// column counts bytes, which is also LSP's UTF-16 count on the ASCII
// lines kept.
type position struct {
	file      string // relative to the module
	line, col int
	// symbol is the called function as pkg.Func, defined at def.
	symbol, name, def string
}

func (p position) String() string { return fmt.Sprintf("%s:%d:%d", p.file, p.line, p.col) }

// findPositions parses the module's Go files (not tests, and only those
// built on this machine) and picks n calls spread over the module, in a
// fixed order so that every run measures the same ones.
func findPositions(dir string, n int) ([]position, error) {
	byDir := map[string][]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != dir && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			if ok, _ := build.Default.MatchFile(filepath.Dir(path), d.Name()); ok {
				byDir[filepath.Dir(path)] = append(byDir[filepath.Dir(path)], path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var all []position
	for _, d := range slices.Sorted(maps.Keys(byDir)) {
		all = append(all, callsAcrossFiles(dir, byDir[d])...)
	}
	if len(all) < n {
		return nil, fmt.Errorf("%s: found %d calls of a function of another file, want %d", dir, len(all), n)
	}
	// One per package first, then evenly spaced.
	seen := map[string]bool{}
	var firsts []position
	for _, p := range all {
		if d := filepath.Dir(p.file); !seen[d] {
			seen[d] = true
			firsts = append(firsts, p)
		}
	}
	if len(firsts) < n {
		firsts = all
	}
	out := make([]position, 0, n)
	for i := range n {
		out = append(out, firsts[i*len(firsts)/n])
	}
	return out, nil
}

// callsAcrossFiles lists, in one package's files, the calls of a function
// (not a method) declared in another file of it, its name unique in the
// package's files (no build-tag twins), each called function once.
func callsAcrossFiles(root string, files []string) []position {
	fset := token.NewFileSet()
	parsed := map[string]*ast.File{}
	declared := map[string]string{} // func name → file
	twice := map[string]bool{}
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil || strings.HasSuffix(af.Name.Name, "_test") {
			continue
		}
		parsed[f] = af
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil || fd.Name.Name == "init" || fd.Name.Name == "main" || fd.Name.Name == "_" {
				continue
			}
			if _, ok := declared[fd.Name.Name]; ok {
				twice[fd.Name.Name] = true
			}
			declared[fd.Name.Name] = f
		}
	}
	var out []position
	used := map[string]bool{}
	for _, f := range slices.Sorted(maps.Keys(parsed)) {
		af := parsed[f]
		src, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(string(src), "\n")
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			id, ok := call.Fun.(*ast.Ident)
			if !ok {
				return true
			}
			def, ok := declared[id.Name]
			if !ok || def == f || twice[id.Name] || used[id.Name] {
				return true
			}
			pos := fset.Position(id.Pos())
			if pos.Line > len(lines) || !ascii(lines[pos.Line-1]) {
				return true
			}
			used[id.Name] = true
			rel, _ := filepath.Rel(root, f)
			defRel, _ := filepath.Rel(root, def)
			out = append(out, position{file: rel, line: pos.Line, col: pos.Column, symbol: af.Name.Name + "." + id.Name, name: id.Name, def: defRel})
			return true
		})
	}
	return out
}

func ascii(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
