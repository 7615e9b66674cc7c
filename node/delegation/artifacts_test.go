package delegation_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// A task's artifacts come back by CID, apart from its workspace: run on
// peer 2 for peer 1, they are fetched by peer 1 on demand; a symlink out
// of the workspace is never imported; bad patterns are refused first.
func TestTaskArtifacts(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, 2*time.Minute)
	ws := t.TempDir()
	testnet.WriteFile(t, filepath.Join(ws, "src.txt"), []byte("source\n"), 0o644)
	script := `mkdir -p out logs; echo binary > out/app; echo one > logs/a.txt; echo two > logs/b.txt; echo kept > notes.txt; ` +
		`ln -s /etc/hostname logs/host.txt; ln -s /etc out/etc`
	for _, at := range []string{tn.Peers[1].Node.ID().String(), ""} { // delegated, then on peer 1 itself
		res, err := cs[0].Run(ctx, &apiv1.RunRequest{
			Spec:      &apiv1.TaskSpec{Command: []string{"sh", "-c", script}, Artifacts: []string{"out/app", "logs/*.txt", "out/etc", "missing/*"}},
			Workspace: ws, Peer: at,
		}, nil)
		if err != nil || res.GetExitCode() != 0 || res.GetError() != "" {
			t.Fatalf("run on %q: %v %+v", at, err, res)
		}
		var paths []string
		byPath := map[string]*apiv1.TaskArtifact{}
		for _, a := range res.GetArtifacts() {
			paths = append(paths, a.GetPath())
			byPath[a.GetPath()] = a
		}
		if want := []string{"out/app", "logs/a.txt", "logs/b.txt"}; !slices.Equal(paths, want) { // in the patterns' order
			t.Fatalf("run on %q: artifacts %v, want %v (no symlink)", at, paths, want)
		}
		// Not merged: the workspace has the rest of what the task wrote.
		if _, err := os.Stat(filepath.Join(ws, "out", "app")); err == nil {
			t.Fatalf("run on %q: an artifact was merged into the workspace", at)
		}
		if b, _ := os.ReadFile(filepath.Join(ws, "notes.txt")); string(b) != "kept\n" {
			t.Fatalf("run on %q: the rest was not merged: %q", at, b)
		}
		// Peer 1 gets the artifact from wherever the task ran.
		dest := filepath.Join(t.TempDir(), "app")
		got, err := cs[0].ArtifactGet(ctx, byPath["out/app"].GetCid(), dest, false, 0, nil)
		if err != nil || got.GetBytes() != 7 {
			t.Fatalf("get the artifact: %v %+v", err, got)
		}
		if b, _ := os.ReadFile(dest); string(b) != "binary\n" {
			t.Fatalf("the artifact got: %q", b)
		}
		for _, f := range []string{"notes.txt"} {
			_ = os.Remove(filepath.Join(ws, f))
		}
		_ = os.RemoveAll(filepath.Join(ws, "out"))
		_ = os.RemoveAll(filepath.Join(ws, "logs"))
	}
	for _, bad := range [][]string{{"../x"}, {"/etc/passwd"}, {"[z-a"}} {
		_, err := cs[0].Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"true"}, Artifacts: bad}, Workspace: ws}, nil)
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("artifacts %q: %v, want invalid", bad, err)
		}
	}
	if _, err := cs[0].Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"true"}, Artifacts: []string{"out"}}}, nil); err == nil || !strings.Contains(err.Error(), "workspace") {
		t.Errorf("artifacts without a workspace: %v", err)
	}
}
