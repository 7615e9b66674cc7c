package lsp_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }

// A small module: Add is defined in add.go and used in main.go.
var module = map[string]string{
	"go.mod":  "module example.com/calc\n\ngo 1.22\n",
	"add.go":  "package main\n\n// Add adds two numbers.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
	"main.go": "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(Add(1, 2))\n}\n",
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		testnet.WriteFile(t, filepath.Join(dir, name), []byte(content), 0o644)
	}
}

func requireGopls(t *testing.T) {
	t.Helper()
	home, _ := os.UserHomeDir()
	for _, p := range []string{filepath.Join(home, "go", "bin", "gopls"), "/usr/local/bin/gopls", "/usr/bin/gopls"} {
		if _, err := os.Stat(p); err == nil {
			return
		}
	}
	t.Fatal("gopls is missing: run `make deps`, which installs it")
}

// TestServerSyncedFromTheDAG: definition through a warm gopls; an edit in
// the directory shows in diagnostics (the view moved by the DAG's diff);
// rename applied through the merge; verify of a result that breaks and of
// one that fixes; one server for the workspace, gone with the peer.
func TestServerSyncedFromTheDAG(t *testing.T) {
	requireGopls(t)
	ws := filepath.Join(t.TempDir(), "calc")
	writeTree(t, ws, module)
	tn := testnet.New(t, 1, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, filepath.Dir(ws))
	}))
	t.Cleanup(func() {
		tn.Close()
		if pids := tn.Peers[0].Node.LSPProcesses(); len(pids) > 0 {
			t.Errorf("language servers left: %v", pids)
		}
	})
	ctx := testnet.Context(t, 3*time.Minute)
	c := tn.Clients(t)[0]
	l := c.LSP()

	// Definition of Add where main.go uses it: add.go:4:6. A cold server
	// may answer warming first; it is asked again.
	var def *apiv1.LSPLocations
	testnet.Eventually(t, "a ready definition", 2*time.Minute, func() bool {
		resp, err := l.Definition(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, File: "main.go", Line: 6, Column: 14}))
		if err != nil {
			t.Fatalf("definition: %v", err)
		}
		def = resp.Msg
		return def.GetStamp().GetState() == "ready"
	})
	if len(def.GetLocations()) != 1 || def.GetLocations()[0].GetFile() != "add.go" || def.GetLocations()[0].GetLine() != 4 || def.GetLocations()[0].GetColumn() != 6 {
		t.Fatalf("definition of Add: %v, want add.go:4:6", def)
	}
	root := def.GetStamp().GetRoot()

	// An edit in the directory: a type error shows.
	testnet.WriteFile(t, filepath.Join(ws, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tvar s string = Add(1, 2)\n\tfmt.Println(s)\n}\n"), 0o644)
	start := time.Now()
	diags, err := l.Diagnostics(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, File: "main.go"}))
	if err != nil {
		t.Fatal(err)
	}
	if diags.Msg.GetStamp().GetRoot() == root || len(diags.Msg.GetDiagnostics()) == 0 || !strings.Contains(diags.Msg.GetDiagnostics()[0].GetMessage(), "cannot use") {
		t.Fatalf("diagnostics after a type error: %v", diags.Msg)
	}
	t.Logf("edit to diagnostic: %v", time.Since(start))
	broken := diags.Msg.GetStamp().GetRoot()
	// A second edit, to a file the server has open now.
	testnet.WriteFile(t, filepath.Join(ws, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tvar s bool = Add(1, 2)\n\tfmt.Println(s)\n}\n"), 0o644)
	start = time.Now()
	if _, err := l.Diagnostics(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, File: "main.go"})); err != nil {
		t.Fatal(err)
	}
	t.Logf("second edit to diagnostic: %v", time.Since(start))

	// Verify: the broken root adds the error to the clean one, and the
	// clean one fixes it.
	rep, err := l.Verify(ctx, connect.NewRequest(&apiv1.LSPVerifyRequest{Workspace: ws, Base: root, Result: broken}))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Msg.GetAddedErrors() != 1 || len(rep.Msg.GetFixed()) != 0 {
		t.Fatalf("verify clean -> broken: %v", rep.Msg)
	}
	rep, err = l.Verify(ctx, connect.NewRequest(&apiv1.LSPVerifyRequest{Workspace: ws, Base: broken, Result: root}))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Msg.GetAddedErrors() != 0 || len(rep.Msg.GetFixed()) != 1 {
		t.Fatalf("verify broken -> clean: %v", rep.Msg)
	}

	// Rename, applied through the merge into the directory.
	writeTree(t, ws, module)
	edit, err := l.Rename(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, File: "add.go", Line: 4, Column: 6, NewName: "Sum", Apply: true}))
	if err != nil {
		t.Fatal(err)
	}
	if len(edit.Msg.GetFiles()) != 2 || len(edit.Msg.GetConflicts()) != 0 {
		t.Fatalf("rename: %v", edit.Msg)
	}
	for _, f := range []string{"add.go", "main.go"} {
		b, _ := os.ReadFile(filepath.Join(ws, f))
		if !strings.Contains(string(b), "Sum(") || strings.Contains(string(b), "Add(") {
			t.Fatalf("%s after the rename:\n%s", f, b)
		}
	}

	// A symbol resolved once is where it was until the tree moves; moved,
	// it is looked up again.
	bySymbol := func() uint32 {
		t.Helper()
		resp, err := l.Definition(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, Symbol: "main.Sum"}))
		if err != nil || len(resp.Msg.GetLocations()) != 1 {
			t.Fatalf("definition of main.Sum: %v %v", resp, err)
		}
		return resp.Msg.GetLocations()[0].GetLine()
	}
	if a, b := bySymbol(), bySymbol(); a != 4 || b != 4 {
		t.Fatalf("main.Sum defined at lines %d and %d, want 4", a, b)
	}
	sum, _ := os.ReadFile(filepath.Join(ws, "add.go"))
	testnet.WriteFile(t, filepath.Join(ws, "add.go"), append([]byte("// Moved.\n\n"), sum...), 0o644)
	if line := bySymbol(); line != 6 {
		t.Fatalf("main.Sum moved two lines down is at line %d, want 6", line)
	}

	// gopls killed: the next query answers (the call is made again on the
	// server started anew), warming at worst, never an error.
	for _, pid := range tn.Peers[0].Node.LSPProcesses() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	testnet.Eventually(t, "the killed gopls to be gone", 10*time.Second, func() bool {
		for _, pid := range tn.Peers[0].Node.LSPProcesses() {
			if syscall.Kill(pid, 0) == nil {
				return false
			}
		}
		return true
	})
	if _, err := l.Definition(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, Symbol: "main.Sum"})); err != nil {
		t.Fatalf("the query after gopls was killed: %v", err)
	}

	// Bad input.
	for _, bad := range []struct {
		q    *apiv1.LSPQuery
		kind error
	}{
		{&apiv1.LSPQuery{Workspace: ws, File: "../etc/passwd", Line: 1, Column: 1}, errdefs.ErrInvalid},
		{&apiv1.LSPQuery{Workspace: ws, File: "main.go", Line: 999, Column: 1}, errdefs.ErrInvalid},
		{&apiv1.LSPQuery{Workspace: ws, File: "nope.go", Line: 1, Column: 1}, errdefs.ErrNotFound},
		{&apiv1.LSPQuery{Workspace: ws}, errdefs.ErrInvalid},
	} {
		if _, err := l.Definition(ctx, connect.NewRequest(bad.q)); !errors.Is(err, bad.kind) {
			t.Errorf("definition %v: %v, want %v", bad.q, err, bad.kind)
		}
	}

	servers, err := l.Servers(ctx, connect.NewRequest(&apiv1.LSPServersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(servers.Msg.GetServers()); n != 1 || servers.Msg.GetServers()[0].GetWorkspace() != ws {
		t.Fatalf("servers: %v, want one for %s", servers.Msg, ws)
	}
}

// A view no call used for the idle timeout is dropped with its server and
// the pin of its root (another peer's workspace does not stay on disk until
// a restart); the next call exports it anew and answers.
func TestIdleViewDropped(t *testing.T) {
	requireGopls(t)
	ws := filepath.Join(t.TempDir(), "calc")
	writeTree(t, ws, module)
	var views string
	tn := testnet.New(t, 1, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, filepath.Dir(ws))
		cfg.LSP.Bridge.IdleTimeout = time.Second
		views = cfg.LSP.ViewsDir
	}))
	ctx := testnet.Context(t, 2*time.Minute)
	l := tn.Clients(t)[0].LSP()
	q := &apiv1.LSPQuery{Workspace: ws, File: "main.go", Line: 6, Column: 14}
	ready := func() {
		t.Helper()
		testnet.Eventually(t, "a ready definition", time.Minute, func() bool {
			resp, err := l.Definition(ctx, connect.NewRequest(q))
			if err != nil {
				t.Fatalf("definition: %v", err)
			}
			return resp.Msg.GetStamp().GetState() == "ready" && len(resp.Msg.GetLocations()) == 1
		})
	}
	ready()
	viewPins := func() int {
		pins, err := tn.Peers[0].Node.Pins()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for name := range pins {
			if strings.HasPrefix(name, "lsp:view:") {
				n++
			}
		}
		return n
	}
	if viewPins() != 1 {
		t.Fatalf("view pins: %d, want 1", viewPins())
	}
	testnet.Eventually(t, "the idle view dropped", 30*time.Second, func() bool {
		entries, _ := os.ReadDir(views)
		return len(entries) == 0 && viewPins() == 0 && len(tn.Peers[0].Node.LSPProcesses()) == 0
	})
	ready()
}
