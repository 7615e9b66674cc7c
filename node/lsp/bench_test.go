package lsp_test

import (
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/node"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/quiet"
)

// BenchmarkDefinition measures a warm definition through the local API:
// the import of the caller's directory (nothing changed), the view, the
// bridge and gopls, beside a status call (the API alone). bridges/lsp's
// BenchmarkWarm has the bridge alone.
//
//	go test -run '^$' -bench Definition -benchtime 200x ./node/lsp/
func BenchmarkDefinition(b *testing.B) {
	ws := filepath.Join(b.TempDir(), "calc")
	for name, content := range module {
		testnet.WriteFile(b, filepath.Join(ws, name), []byte(content), 0o644)
	}
	tn := testnet.New(b, 1, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, filepath.Dir(ws))
	}))
	defer tn.Close()
	ctx := testnet.Context(b, 3*time.Minute)
	l := tn.Clients(b)[0].LSP()
	q := &apiv1.LSPQuery{Workspace: ws, File: "main.go", Line: 6, Column: 14}
	testnet.Eventually(b, "a ready definition", 2*time.Minute, func() bool {
		resp, err := l.Definition(ctx, connect.NewRequest(q))
		if err != nil {
			b.Fatal(err)
		}
		return resp.Msg.GetStamp().GetState() == "ready"
	})
	quiet.Wait(time.Minute) // gopls done with what opening the files started
	b.Run("definition", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.Definition(ctx, connect.NewRequest(q)); err != nil {
				b.Fatal(err)
			}
		}
	})
	c := tn.Clients(b)[0]
	b.Run("status", func(b *testing.B) { // the API alone
		for b.Loop() {
			if _, err := c.Status(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
