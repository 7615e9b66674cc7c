package mcpserver_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/node/mcpserver"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestLSPTools asks the workspace's gopls through the MCP tools while the
// API asks it too: one gopls serves both.
func TestLSPTools(t *testing.T) {
	home, _ := os.UserHomeDir()
	if _, err := os.Stat(filepath.Join(home, "go", "bin", "gopls")); err != nil {
		t.Fatalf("gopls is missing (%v): run `make deps`, which installs it", err)
	}
	ws := filepath.Join(t.TempDir(), "calc")
	for name, content := range map[string]string{
		"go.mod":  "module example.com/calc\n\ngo 1.22\n",
		"add.go":  "package main\n\n// Add adds two numbers.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
		"main.go": "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(Add(1, 2))\n}\n",
	} {
		testnet.WriteFile(t, filepath.Join(ws, name), []byte(content), 0o644)
	}
	e := newEnv(t)
	t.Cleanup(func() {
		e.tn.Close()
		for _, p := range e.tn.Peers {
			if pids := p.Node.LSPProcesses(); len(pids) > 0 {
				t.Errorf("%s left language servers %v", p.Name, pids)
			}
		}
	})
	cs := e.connect(t, "stdio", nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the API at the same time
		defer wg.Done()
		ctx := testnet.Context(t, 2*time.Minute)
		for range 3 {
			if _, err := e.api.LSP().Hover(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, File: "main.go", Line: 6, Column: 14})); err != nil {
				t.Errorf("hover over the API: %v", err)
			}
		}
	}()
	var def mcpserver.LSPLocations
	testnet.Eventually(t, "a ready definition over MCP", 2*time.Minute, func() bool {
		def = decode[mcpserver.LSPLocations](t, cs, "lsp_definition", map[string]any{"workspace": ws, "symbol": "main.Add"})
		return def.State == "ready"
	})
	wg.Wait()
	if len(def.Locations) != 1 || def.Locations[0].File != "add.go" || def.Locations[0].Line != 4 {
		t.Fatalf("lsp_definition of main.Add: %+v", def)
	}
	refs := decode[mcpserver.LSPLocations](t, cs, "lsp_references", map[string]any{"workspace": ws, "file": "add.go", "line": 4, "column": 6, "limit": 1})
	if refs.Total < 2 || len(refs.Locations) != 1 || refs.NextOffset != 1 {
		t.Fatalf("lsp_references with limit 1: %+v, want the first, the total and next_offset", refs)
	}
	diags := decode[mcpserver.LSPDiagnostics](t, cs, "lsp_diagnostics", map[string]any{"workspace": ws})
	if diags.State != "ready" || diags.Total != 0 {
		t.Fatalf("lsp_diagnostics of a clean module: %+v", diags)
	}
	servers := decode[mcpserver.LSPServers](t, cs, "lsp_servers", map[string]any{})
	if len(servers.Servers) != 1 || servers.Servers[0].Workspace != ws || servers.Servers[0].PID == 0 {
		t.Fatalf("lsp_servers: %+v, want one gopls for both clients", servers)
	}
}
