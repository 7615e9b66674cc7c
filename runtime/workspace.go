package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// maxWorkspaceDepth bounds how deep chownTree descends: a deeper tree is
// refused rather than walked (a path that deep is an attack, not a project).
const maxWorkspaceDepth = 256

// chownTree makes every file and directory under dir (dir included) owned by
// uid:gid, so that a task running as that user can write its workspace.
// It works through an os.Root and never follows a symbolic link, so a link
// in the tree, even one swapped in while the walk runs, cannot make it touch
// anything outside dir.
func chownTree(ctx context.Context, dir string, uid, gid uint32) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("workspace %s: %w: %w", dir, err, errdefs.ErrNotFound)
	}
	if !fi.IsDir() {
		return fmt.Errorf("workspace %s is not a directory: %w", dir, errdefs.ErrInvalid)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("workspace %s: %w", dir, err)
	}
	defer root.Close()
	if err := chownDir(ctx, root, ".", int(uid), int(gid), 0); err != nil {
		return fmt.Errorf("make workspace %s owned by %d:%d: %w", dir, uid, gid, err)
	}
	return nil
}

func chownDir(ctx context.Context, root *os.Root, dir string, uid, gid, depth int) error {
	if depth > maxWorkspaceDepth {
		return fmt.Errorf("%s: deeper than %d levels: %w", dir, maxWorkspaceDepth, errdefs.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := root.Lchown(dir, uid, gid); err != nil {
		return err
	}
	f, err := root.Open(dir)
	if err != nil {
		return err
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := path.Join(dir, e.Name())
		if e.Type()&fs.ModeDir != 0 {
			err = chownDir(ctx, root, name, uid, gid, depth+1)
		} else {
			err = root.Lchown(name, uid, gid)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// ChownWorkspace makes every file and directory under dir owned by
// uid:gid, as the executor does to a task's workspace, never following a
// link: for a peer that prepares a workspace once for many tasks (and sets
// Spec.WorkspaceOwned).
func ChownWorkspace(ctx context.Context, dir string, uid, gid uint32) error {
	return chownTree(ctx, dir, uid, gid)
}
