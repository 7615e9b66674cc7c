package lsp_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestRunVerify: a task whose result adds a type error merges with its
// report under --verify, and is refused under --verify=block; a clean one
// merges under block.
func TestRunVerify(t *testing.T) {
	requireGopls(t)
	root := t.TempDir()
	tn := testnet.New(t, 1, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, root)
	}))
	t.Cleanup(func() {
		tn.Close()
		if pids := tn.Peers[0].Node.LSPProcesses(); len(pids) > 0 {
			t.Errorf("language servers left: %v", pids)
		}
	})
	ctx := testnet.Context(t, 4*time.Minute)
	c := tn.Clients(t)[0]
	breaks := `sed -i 's/fmt.Println(Add(1, 2))/var s string = Add(1, 2); fmt.Println(s)/' main.go`
	for _, tc := range []struct {
		name, mode, script string
		merged             bool
		addedErrors        uint32
	}{
		{"report", "report", breaks, true, 1},
		{"block", "block", breaks, false, 1},
		{"clean", "block", `sed -i 's/a + b/b + a/' add.go`, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := filepath.Join(root, tc.name)
			writeTree(t, ws, module)
			res, err := c.Run(ctx, &apiv1.RunRequest{Workspace: ws, Verify: tc.mode, Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", tc.script}}}, nil)
			v := res.GetVerify()
			if v == nil || v.GetAddedErrors() != tc.addedErrors {
				t.Fatalf("verify report %v (err %v), want %d added errors", v, err, tc.addedErrors)
			}
			b, _ := os.ReadFile(filepath.Join(ws, "main.go"))
			a, _ := os.ReadFile(filepath.Join(ws, "add.go"))
			changed := strings.Contains(string(b), "var s string") || strings.Contains(string(a), "b + a")
			if changed != tc.merged {
				t.Fatalf("merged %v, want %v (err %v)", changed, tc.merged, err)
			}
			if !tc.merged && !strings.Contains(res.GetError(), "not merged") {
				t.Fatalf("a blocked result: error %q (%v), want one saying it was not merged", res.GetError(), err)
			}
			if tc.merged && err != nil {
				t.Fatal(err)
			}
		})
	}
}
