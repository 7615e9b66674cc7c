package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestCLILSP asks the peer's gopls through the binary.
func TestCLILSP(t *testing.T) {
	home, _ := os.UserHomeDir()
	if _, err := os.Stat(filepath.Join(home, "go", "bin", "gopls")); err != nil {
		t.Fatalf("gopls is missing (%v): run `make deps`, which installs it", err)
	}
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	startTestnet(t, bin, dir, "1")
	p1 := filepath.Join(dir, "peer1")
	ws := filepath.Join(t.TempDir(), "calc")
	for name, content := range map[string]string{
		"go.mod":  "module example.com/calc\n\ngo 1.22\n",
		"add.go":  "package main\n\n// Add adds two numbers.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
		"main.go": "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(Add(1, 2))\n}\n",
	} {
		testnet.WriteFile(t, filepath.Join(ws, name), []byte(content), 0o644)
	}
	var r result
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r = run(t, bin, "lsp", "definition", "--data", p1, "--workspace", ws, "main.go:6:14")
		if r.code != 0 || !strings.Contains(r.stderr, "warming") || time.Now().After(deadline) {
			break
		}
	}
	if r.code != 0 || strings.TrimSpace(r.stdout) != "add.go:4:6" {
		t.Fatalf("lsp definition: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "lsp", "hover", "--data", p1, "--workspace", ws, "--symbol", "main.Add"); r.code != 0 || !strings.Contains(r.stdout, "func Add(a int, b int) int") {
		t.Fatalf("lsp hover: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	testnet.WriteFile(t, filepath.Join(ws, "main.go"), []byte("package main\n\nfunc main() {\n\tvar s string = Add(1, 2)\n\t_ = s\n}\n"), 0o644)
	if r = run(t, bin, "lsp", "diagnostics", "--data", p1, "--workspace", ws); r.code != 0 || !strings.Contains(r.stdout, "main.go:4:") {
		t.Fatalf("lsp diagnostics after an edit: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "lsp", "servers", "--json", "--data", p1); r.code != 0 || !strings.Contains(r.stdout, ws) {
		t.Fatalf("lsp servers: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "lsp", "definition", "--data", p1, "--workspace", ws, "main.go:x:1"); r.code != 2 {
		t.Fatalf("a bad position: exit %d, want 2 (usage) %s", r.code, r.stderr)
	}
}
