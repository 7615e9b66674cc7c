package dag

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// A directory the Refuse option points at fails the import, naming it,
// wherever it is in the tree; a tree without one, or one that ignores it
// in .cortexignore, imports as before.
func TestImportRefusesDirectories(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	secret := func(has func(string) bool) string {
		if has("identity.key") && has("config.toml") {
			return "it is a peer's data dir"
		}
		return ""
	}
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"src/main.go":             "package main\n",
		"peers/p1/identity.key":   "KEY",
		"peers/p1/config.toml":    "[api]\n",
		"peers/p1/store/MANIFEST": "x",
		"notes/identity.key":      "only a key: not a data dir",
	})
	_, err := s.Import(ctx, root, ImportOptions{Refuse: secret})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, errdefs.ErrPermissionDenied) ||
		!strings.Contains(err.Error(), "peers/p1") || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("tree holding a data dir: %v, want ErrRefused naming peers/p1", err)
	}
	_, err = s.Import(ctx, filepath.Join(root, "peers", "p1"), ImportOptions{Refuse: secret})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("the data dir itself: %v, want ErrRefused", err)
	}
	writeTree(t, root, map[string]string{".cortexignore": "peers/\n"})
	res, err := s.Import(ctx, root, ImportOptions{Refuse: secret})
	if err != nil || res.Ignored != 1 {
		t.Fatalf("data dir ignored by .cortexignore: %+v, %v", res, err)
	}
	if _, err := s.Import(ctx, filepath.Join(root, "src"), ImportOptions{Refuse: secret}); err != nil {
		t.Fatalf("plain tree: %v", err)
	}
}

// The root of the file system is refused plainly, before any listing
// (it used to fail halfway with "proc/1: cwd: permission denied").
func TestImportRefusesFileSystemRoot(t *testing.T) {
	s := openStore(t)
	_, err := s.Import(context.Background(), "/", ImportOptions{})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "root of the file system") {
		t.Fatalf("import /: %v, want invalid argument saying why", err)
	}
}
