package mcpserver

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

func (s *Server) addUpdateTools() {
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "update_status",
		Title:       "Show this peer's self-update state",
		Description: `Return what this peer's updater knows about the mesh's signed self-update: the version it runs, the installed releases (current, previous), the highest version ever installed here, what it is doing (state: idle, fetching, installing, restarting, trial, rolled_back or disabled) and its last error, whether updates are enabled (trusted keys set), automatic and supervised (run by the update supervisor, so it can swap binaries), the trusted key ids, the versions it will never try again (bad), the signed releases it has seen with its verdict on each, and the failures other peers reported. Takes no arguments; changes nothing.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.updateStatus)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "update_rollback",
		Title:       "Roll this peer back to its previous version",
		Description: `Switch this peer back to its previous version now: the version it runs is marked bad (never installed again here), then the peer drains (no new tasks; running ones end or are handed back to their coordinators) and restarts into the previous release, or into the installed binary when to is empty. The peer is unavailable while it restarts. Takes no arguments; returns from and to. Use update_status first to see what would run next.`,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true)},
	}, s.updateRollback)
}

// UpdateRelease is a release update_status reports.
type UpdateRelease struct {
	Version     string  `json:"version"`
	Binary      string  `json:"binary" jsonschema:"CID of the binary"`
	Length      int64   `json:"length" jsonschema:"the binary's size in bytes"`
	Rollout     float64 `json:"rollout" jsonschema:"share of peers that install it, in (0, 1]"`
	KeyID       string  `json:"key_id" jsonschema:"id of the key that signed it"`
	ExpiresUnix int64   `json:"expires_unix"`
	From        string  `json:"from,omitempty" jsonschema:"peer it came from"`
	Verdict     string  `json:"verdict" jsonschema:"accepted, installed, waiting, out_of_rollout, or why it was refused"`
	SeenUnix    int64   `json:"seen_unix"`
}

// UpdateFailure is a failure another peer reported.
type UpdateFailure struct {
	Version string `json:"version"`
	Peer    string `json:"peer"`
	Reason  string `json:"reason"`
	AtUnix  int64  `json:"at_unix"`
}

// UpdateStatusOutput is update_status's result.
type UpdateStatusOutput struct {
	Version         string          `json:"version" jsonschema:"the version running"`
	Current         string          `json:"current" jsonschema:"the current release (empty: the installed binary)"`
	Previous        string          `json:"previous,omitempty" jsonschema:"the release a rollback returns to"`
	Highest         string          `json:"highest,omitempty" jsonschema:"the highest version ever installed here"`
	State           string          `json:"state" jsonschema:"idle, fetching, installing, restarting, trial, rolled_back or disabled"`
	LastError       string          `json:"last_error,omitempty"`
	Enabled         bool            `json:"enabled" jsonschema:"trusted keys are set"`
	Auto            bool            `json:"auto"`
	Supervised      bool            `json:"supervised" jsonschema:"run by the update supervisor, which can swap binaries"`
	TrustedKeys     []string        `json:"trusted_keys,omitempty" jsonschema:"ids of the keys whose releases this peer installs"`
	Bad             []string        `json:"bad,omitempty" jsonschema:"versions never tried again"`
	Releases        []UpdateRelease `json:"releases,omitempty" jsonschema:"releases seen, newest first"`
	Failures        []UpdateFailure `json:"failures,omitempty" jsonschema:"failures reported by peers that rolled back"`
	Window          string          `json:"window,omitempty"`
	HealthTimeoutMs int64           `json:"health_timeout_ms,omitempty"`
}

func (s *Server) updateStatus(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, UpdateStatusOutput, error) {
	st, err := s.api.UpdateStatus(ctx)
	if err != nil {
		return nil, UpdateStatusOutput{}, toolError(err)
	}
	return nil, updateStatusOutput(st), nil
}

func updateStatusOutput(st *apiv1.UpdateStatus) UpdateStatusOutput {
	out := UpdateStatusOutput{
		Version: st.GetVersion(), Current: st.GetCurrent(), Previous: st.GetPrevious(), Highest: st.GetHighest(),
		State: st.GetState(), LastError: st.GetLastError(), Enabled: st.GetEnabled(), Auto: st.GetAuto(),
		Supervised: st.GetSupervised(), TrustedKeys: st.GetTrustedKeys(), Bad: st.GetBad(),
		Window: st.GetWindow(), HealthTimeoutMs: st.GetHealthTimeoutMs(),
	}
	for _, r := range st.GetReleases() {
		out.Releases = append(out.Releases, UpdateRelease{Version: r.GetVersion(), Binary: r.GetBinary(), Length: r.GetLength(),
			Rollout: r.GetRollout(), KeyID: r.GetKeyId(), ExpiresUnix: r.GetExpiresUnix(), From: r.GetFrom(),
			Verdict: r.GetVerdict(), SeenUnix: r.GetSeenUnix()})
	}
	for _, f := range st.GetFailures() {
		out.Failures = append(out.Failures, UpdateFailure{Version: f.GetVersion(), Peer: f.GetPeer(), Reason: f.GetReason(), AtUnix: f.GetAtUnix()})
	}
	return out
}

// UpdateRollbackOutput is update_rollback's result.
type UpdateRollbackOutput struct {
	From string `json:"from" jsonschema:"the version marked bad"`
	To   string `json:"to" jsonschema:"the version the peer restarts into (empty: the installed binary)"`
}

func (s *Server) updateRollback(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, UpdateRollbackOutput, error) {
	r, err := s.api.UpdateRollback(ctx)
	if err != nil {
		return nil, UpdateRollbackOutput{}, toolError(err)
	}
	return nil, UpdateRollbackOutput{From: r.GetFrom(), To: r.GetTo()}, nil
}
