package node_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/cortex-peer/cortex-peer"

// maxRootLines bounds node's own files: the composition root builds and
// wires; a capability that grows here belongs in a package of its own.
const maxRootLines = 1200

// The shape of the code: capabilities under node/ and the lower layers
// never depend on node (none holds a *Node), and dag, runtime and bridges
// know nothing of libp2p. This fails when an import breaks that.
func TestPackageShape(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root := module + "/node"
	under := func(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, deps := fields[0], fields[1:]
		mustNotImportNode := pkg != root && (under(pkg, root) ||
			under(pkg, module+"/dag") || under(pkg, module+"/runtime") ||
			under(pkg, module+"/p2p") || under(pkg, module+"/bridges"))
		noLibp2p := under(pkg, module+"/dag") || under(pkg, module+"/runtime") || under(pkg, module+"/bridges")
		if mustNotImportNode || noLibp2p {
			checked++
		}
		for _, d := range deps {
			if mustNotImportNode && d == root {
				t.Errorf("%s imports %s: only cmd and testnet may; take what you need as a small interface", pkg, root)
			}
			// Only the networking stack counts: go-buffer-pool, a byte
			// pool boxo uses, carries the name but no network.
			if noLibp2p && strings.HasPrefix(d, "github.com/libp2p/go-libp2p") {
				t.Errorf("%s imports %s: lower layers know nothing of libp2p", pkg, d)
			}
		}
	}
	if checked < 10 {
		t.Errorf("checked only %d packages: go list did not list the module", checked)
	}
}

// node's own files stay a composition root.
func TestRootStaysSmall(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			total++
		}
		fh.Close()
	}
	if total > maxRootLines {
		t.Errorf("node's own files hold %d lines, over %d: move a capability into a package under node/", total, maxRootLines)
	}
}
