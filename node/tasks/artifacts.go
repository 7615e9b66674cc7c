package tasks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Artifact is a file or directory a task left under /workspace, imported
// as a DAG on the peer that ran it and pinned there with the task.
type Artifact struct {
	Path  string // relative to the workspace
	Root  cid.Cid
	Bytes int64
}

// Bounds on a task's artifacts.
const (
	maxArtifactPatterns = 64
	maxArtifacts        = 1024
)

// CheckArtifacts refuses artifact patterns that could name something
// outside the workspace or are not globs, before the task runs.
func CheckArtifacts(patterns []string) error {
	if len(patterns) > maxArtifactPatterns {
		return fmt.Errorf("%d artifact patterns, over %d: %w", len(patterns), maxArtifactPatterns, errdefs.ErrInvalid)
	}
	for _, p := range patterns {
		if p == "" || filepath.IsAbs(p) || !filepath.IsLocal(filepath.Clean(p)) {
			return fmt.Errorf("artifact %q: want a path or glob relative to the workspace, inside it: %w", p, errdefs.ErrInvalid)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("artifact %q: %v: %w", p, err, errdefs.ErrInvalid)
		}
	}
	return nil
}

// ArtifactPin names the pin that keeps a task's n-th artifact on the peer
// that ran it; it goes with the task's other pins.
func ArtifactPin(id string, n int) string { return ArtifactPinPrefix(id) + strconv.Itoa(n) }

// ArtifactPinPrefix starts the pins of a task's artifacts.
func ArtifactPinPrefix(id string) string { return "task:" + id + ":artifact:" }

// collectArtifacts imports what the patterns match in the task's working
// copy, pins each, and removes it from the copy, so that it comes back as
// an artifact and not in the workspace's merge. A match that is a symlink,
// or that lies through one outside the copy, is skipped: a task must not
// make its peer import the peer's own files. t.gc is held.
func (t *Runner) collectArtifacts(ctx context.Context, id, copyDir string, patterns []string) ([]Artifact, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	if err := CheckArtifacts(patterns); err != nil {
		return nil, err
	}
	base, err := filepath.EvalSymlinks(copyDir)
	if err != nil {
		return nil, fmt.Errorf("task %s: artifacts: %w", id, err)
	}
	var out []Artifact
	seen := map[string]bool{}
	for _, pat := range patterns {
		matches, err := filepath.Glob(filepath.Join(copyDir, filepath.Clean(pat)))
		if err != nil {
			return nil, fmt.Errorf("task %s: artifact %q: %v: %w", id, pat, err, errdefs.ErrInvalid)
		}
		slices.Sort(matches)
		for _, m := range matches {
			rel, err := filepath.Rel(copyDir, m)
			if err != nil || !filepath.IsLocal(rel) || seen[rel] {
				continue
			}
			if len(out) >= maxArtifacts {
				return nil, fmt.Errorf("task %s: more than %d artifacts: %w", id, maxArtifacts, errdefs.ErrResourceExhausted)
			}
			a, err := t.importArtifact(ctx, base, m, rel)
			if errors.Is(err, errSkipArtifact) {
				t.log.Warn("task artifact skipped", "task", id, "path", rel, "why", err)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("task %s: artifact %s: %w", id, rel, err)
			}
			seen[rel] = true
			if err := t.dags.Pin(ArtifactPin(id, len(out)), a.Root); err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	// Removed once all are imported: a pattern may match inside a match.
	for _, a := range out {
		if err := os.RemoveAll(filepath.Join(copyDir, a.Path)); err != nil {
			return nil, fmt.Errorf("task %s: artifact %s: %w", id, a.Path, err)
		}
	}
	return out, nil
}

var errSkipArtifact = errors.New("not a regular file or directory inside the workspace")

// importArtifact imports the file or directory m (rel in the copy whose
// real path is base).
func (t *Runner) importArtifact(ctx context.Context, base, m, rel string) (Artifact, error) {
	info, err := os.Lstat(m)
	if err != nil {
		return Artifact{}, err
	}
	real, err := filepath.EvalSymlinks(m)
	if err != nil || (real != base && !strings.HasPrefix(real, base+string(filepath.Separator))) || info.Mode()&os.ModeSymlink != 0 {
		return Artifact{}, errSkipArtifact
	}
	switch {
	case info.IsDir():
		im, err := t.dags.Import(ctx, m, dag.ImportOptions{NoIndex: true})
		if err != nil {
			return Artifact{}, err
		}
		return Artifact{Path: filepath.ToSlash(rel), Root: im.Root, Bytes: im.Bytes}, nil
	case info.Mode().IsRegular():
		f, err := os.OpenFile(m, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return Artifact{}, err
		}
		defer f.Close()
		root, err := t.dags.AddFile(ctx, f)
		if err != nil {
			return Artifact{}, err
		}
		return Artifact{Path: filepath.ToSlash(rel), Root: root, Bytes: info.Size()}, nil
	}
	return Artifact{}, errSkipArtifact
}
