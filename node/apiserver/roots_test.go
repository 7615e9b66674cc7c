package apiserver_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestAPIPathsStayInAllowedRoots: the peer runs as root, and a caller with
// the API token once merged a workspace into /etc. Every path the API is
// given must resolve, after symlinks, inside [api] allowed_roots.
func TestAPIPathsStayInAllowedRoots(t *testing.T) {
	tn := testnet.New(t, 1)
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testnet.Context(t, time.Minute)

	// A change that adds one file, named so that it cannot clash with /etc.
	canary := "cortex-peer-roots-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	src := t.TempDir()
	base, err := c.WorkspaceAdd(ctx, src, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	testnet.WriteFile(t, filepath.Join(src, canary), []byte("x\n"), 0o644)
	theirs, err := c.WorkspaceAdd(ctx, src, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join("/etc", canary)) }) // only if the check failed

	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "allowed_roots") || !strings.Contains(err.Error(), os.TempDir()) {
			t.Errorf("%s: got %v, want permission denied naming allowed_roots and the roots", what, err)
		}
	}
	_, err = c.WorkspaceMerge(ctx, base.GetCid(), theirs.GetCid(), "/etc")
	refused("merge into /etc", err)
	if _, serr := os.Stat(filepath.Join("/etc", canary)); serr == nil {
		t.Fatalf("merge into /etc wrote /etc/%s", canary)
	}

	// A link inside an allowed root that leads out of it is judged by where
	// it leads, for paths that exist and for those still to be created.
	tmp := t.TempDir()
	if err := os.Symlink("/etc", filepath.Join(tmp, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/"+canary+"-dir", filepath.Join(tmp, "dangling")); err != nil {
		t.Fatal(err)
	}
	_, err = c.WorkspaceMerge(ctx, base.GetCid(), theirs.GetCid(), filepath.Join(tmp, "etc"))
	refused("merge through a link to /etc", err)
	_, err = c.WorkspaceGet(ctx, theirs.GetCid(), filepath.Join(tmp, "etc", canary+"-dir"), 0, false, nil)
	refused("get below a link to /etc", err)
	if _, err = c.WorkspaceGet(ctx, theirs.GetCid(), filepath.Join(tmp, "dangling", "x"), 0, false, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("get below a dangling link: got %v, want invalid argument", err)
	}
	if _, serr := os.Lstat(filepath.Join("/etc", canary+"-dir")); serr == nil {
		os.RemoveAll(filepath.Join("/etc", canary+"-dir"))
		t.Fatalf("get through a link wrote into /etc")
	}
	_, err = c.WorkspaceAdd(ctx, "/etc", false, nil)
	refused("add /etc", err)
	_, err = c.ImportCAR(ctx, "/etc/shadow")
	refused("import CAR /etc/shadow", err)
	_, err = c.ImageImport(ctx, "/etc/shadow", "")
	refused("import image /etc/shadow", err)
	_, err = c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"true"}}, Workspace: "/etc"}, nil)
	refused("run on /etc", err)

	// Inside the roots all works as before.
	dest := filepath.Join(t.TempDir(), "copy")
	if _, err := c.WorkspaceGet(ctx, theirs.GetCid(), dest, 0, false, nil); err != nil {
		t.Fatalf("get into the temp dir: %v", err)
	}
	mine := t.TempDir()
	if _, err := c.WorkspaceMerge(ctx, base.GetCid(), theirs.GetCid(), mine); err != nil {
		t.Fatalf("merge into the temp dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mine, canary)); err != nil {
		t.Fatalf("merge into the temp dir: %v", err)
	}
}

// TestAPIAllowedRootsFromConfig: the roots are the config's, not a fixed
// list: a peer allowed only one directory refuses the temp dir beside it.
func TestAPIAllowedRootsFromConfig(t *testing.T) {
	only := t.TempDir()
	tn := testnet.New(t, 1, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = []string{only}
	}))
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testnet.Context(t, 30*time.Second)
	testnet.WriteFile(t, filepath.Join(only, "a"), []byte("a"), 0o644)
	if _, err := c.WorkspaceAdd(ctx, only, false, nil); err != nil {
		t.Fatalf("add the allowed dir: %v", err)
	}
	_, err = c.WorkspaceAdd(ctx, t.TempDir(), false, nil)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), only) || !strings.Contains(err.Error(), "config.toml") {
		t.Fatalf("add outside the only root: got %v", err)
	}
}
