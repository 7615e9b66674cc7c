package lsp_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/node"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestServerOnAnotherPeer: peer 1's workspace is answered by peer 2's
// gopls, which fetches it by its root; an edit on peer 1 reaches it; a
// rename made there is merged here.
func TestServerOnAnotherPeer(t *testing.T) {
	requireGopls(t)
	ws := filepath.Join(t.TempDir(), "calc")
	writeTree(t, ws, module)
	tn := testnet.New(t, 2, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, filepath.Dir(ws))
	}))
	t.Cleanup(func() {
		tn.Close()
		for _, p := range tn.Peers {
			if pids := p.Node.LSPProcesses(); len(pids) > 0 {
				t.Errorf("%s left language servers: %v", p.Name, pids)
			}
		}
	})
	ctx := testnet.Context(t, 3*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	there := tn.Peers[1].Node.ID().String()
	l := cs[0].LSP()

	var def *apiv1.LSPLocations
	testnet.Eventually(t, "a ready definition from peer 2", 2*time.Minute, func() bool {
		resp, err := l.Definition(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, Symbol: "main.Add", Peer: there}))
		if err != nil {
			t.Fatalf("definition on peer 2: %v", err)
		}
		def = resp.Msg
		return def.GetStamp().GetState() == "ready"
	})
	if len(def.GetLocations()) != 1 || def.GetLocations()[0].GetFile() != "add.go" {
		t.Fatalf("definition on peer 2: %v", def)
	}
	clean := def.GetStamp().GetRoot()

	testnet.WriteFile(t, filepath.Join(ws, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tvar s string = Add(1, 2)\n\tfmt.Println(s)\n}\n"), 0o644)
	diags, err := l.Diagnostics(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, File: "main.go", Peer: there}))
	if err != nil {
		t.Fatal(err)
	}
	if len(diags.Msg.GetDiagnostics()) == 0 || diags.Msg.GetStamp().GetRoot() == clean {
		t.Fatalf("peer 2 does not see the edit made on peer 1: %v", diags.Msg)
	}
	rep, err := l.Verify(ctx, connect.NewRequest(&apiv1.LSPVerifyRequest{Workspace: ws, Base: clean, Result: diags.Msg.GetStamp().GetRoot(), Peer: there}))
	if err != nil || rep.Msg.GetAddedErrors() != 1 {
		t.Fatalf("verify on peer 2: %v %v", rep, err)
	}

	writeTree(t, ws, module)
	edit, err := l.Rename(ctx, connect.NewRequest(&apiv1.LSPQuery{Workspace: ws, Symbol: "main.Add", NewName: "Sum", Apply: true, Peer: there}))
	if err != nil {
		t.Fatal(err)
	}
	if len(edit.Msg.GetFiles()) != 2 || len(edit.Msg.GetConflicts()) != 0 {
		t.Fatalf("rename on peer 2: %v", edit.Msg)
	}
	b, _ := os.ReadFile(filepath.Join(ws, "main.go"))
	if !strings.Contains(string(b), "Sum(1, 2)") {
		t.Fatalf("the rename made on peer 2 is not merged here:\n%s", b)
	}
	// A task run on peer 2 is verified on peer 1 before its result merges
	// here: with block, a result that adds an error stays out.
	res, err := cs[0].Run(ctx, &apiv1.RunRequest{Workspace: ws, Verify: "block", Peer: there, Spec: &apiv1.TaskSpec{
		Command: []string{"sh", "-c", `sed -i 's/fmt.Println(Sum(1, 2))/var s string = Sum(1, 2); fmt.Println(s)/' main.go`},
	}}, nil)
	if res.GetVerify().GetAddedErrors() != 1 || !strings.Contains(res.GetError(), "not merged") {
		t.Fatalf("a delegated task's result that adds an error, under block: %v (%v)", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "main.go")); strings.Contains(string(b), "var s string") {
		t.Fatalf("a blocked result was merged:\n%s", b)
	}
	servers, err := cs[1].LSP().Servers(ctx, connect.NewRequest(&apiv1.LSPServersRequest{}))
	if err != nil || len(servers.Msg.GetServers()) != 1 || !strings.HasSuffix(servers.Msg.GetServers()[0].GetWorkspace(), ":"+ws) {
		t.Fatalf("peer 2's servers: %v %v", servers, err)
	}
}
