package mcpserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/node/mcpserver"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// updateAPI answers the update calls; any other call panics (the embedded
// API is nil): the update tools must make no other.
type updateAPI struct {
	mcpserver.API
	status      *apiv1.UpdateStatus
	rollback    *apiv1.UpdateRollbackResponse
	rollbackErr error
}

func (a *updateAPI) UpdateStatus(context.Context) (*apiv1.UpdateStatus, error) { return a.status, nil }

func (a *updateAPI) UpdateRollback(context.Context) (*apiv1.UpdateRollbackResponse, error) {
	return a.rollback, a.rollbackErr
}

// memSession connects a client to a server on api in memory.
func memSession(t *testing.T, api mcpserver.API) *mcp.ClientSession {
	t.Helper()
	srv := mcpserver.New(api, mcpserver.Options{Version: "test"})
	st, ct := mcp.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, st) }()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "cortex-test", Version: "1"}, nil).Connect(testnet.Context(t, 10*time.Second), ct, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.Close()
		cancel()
		<-done
	})
	return cs
}

// The update tools are annotated for what they do and carry the status and
// the rollback as the API gives them; errors keep their code.
func TestUpdateTools(t *testing.T) {
	api := &updateAPI{
		status: &apiv1.UpdateStatus{Version: "1.4.0", Current: "1.4.0", Previous: "1.3.0", State: "trial", Enabled: true, Supervised: true,
			TrustedKeys: []string{"0123abcd01234567"}, HealthTimeoutMs: 120000,
			Releases: []*apiv1.UpdateRelease{{Version: "1.4.0", Binary: "bafy", Length: 42, Rollout: 0.2, KeyId: "0123abcd01234567", Verdict: "installed"}},
			Failures: []*apiv1.UpdateFailure{{Version: "1.3.9", Peer: "12D3KooW", Reason: "not healthy", AtUnix: 7}}},
		rollback: &apiv1.UpdateRollbackResponse{From: "1.4.0", To: ""},
	}
	cs := memSession(t, api)
	ctx := testnet.Context(t, 10*time.Second)

	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, tool := range tools.Tools {
		switch tool.Name {
		case "update_status":
			found++
			if tool.Annotations == nil || !tool.Annotations.ReadOnlyHint {
				t.Errorf("update_status is not read-only: %+v", tool.Annotations)
			}
		case "update_rollback":
			found++
			if tool.Annotations == nil || tool.Annotations.ReadOnlyHint || tool.Annotations.DestructiveHint == nil || !*tool.Annotations.DestructiveHint {
				t.Errorf("update_rollback is not destructive: %+v", tool.Annotations)
			}
		}
	}
	if found != 2 {
		t.Fatalf("update tools listed: %d, want 2", found)
	}

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "update_status", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("update_status: %v %s", err, textOf(res))
	}
	var st mcpserver.UpdateStatusOutput
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.4.0" || st.Previous != "1.3.0" || st.State != "trial" || !st.Enabled || !st.Supervised || st.HealthTimeoutMs != 120000 ||
		len(st.TrustedKeys) != 1 || len(st.Releases) != 1 || st.Releases[0].Rollout != 0.2 || st.Releases[0].Verdict != "installed" ||
		len(st.Failures) != 1 || st.Failures[0].Reason != "not healthy" {
		t.Fatalf("update_status: %s", b)
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "update_rollback", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("update_rollback: %v %s", err, textOf(res))
	}
	var rb mcpserver.UpdateRollbackOutput
	b, _ = json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &rb); err != nil || rb.From != "1.4.0" || rb.To != "" {
		t.Fatalf("update_rollback: %s %v", b, err)
	}

	api.rollbackErr = fmt.Errorf("update rollback: no previous version: %w", errdefs.ErrNotFound)
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "update_rollback", Arguments: map[string]any{}})
	if err != nil || !res.IsError || !strings.HasPrefix(textOf(res), "not_found: ") {
		t.Fatalf("update_rollback failing: %v %s", err, textOf(res))
	}
}
