package tasklog

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Locker is the read side of the GC lock: held while blocks that no pin
// reaches yet are added.
type Locker interface {
	RLock()
	RUnlock()
}

// DAGArchive keeps spilled output in the peer's DAG store.
type DAGArchive struct {
	dags *dag.Store
	gc   Locker
}

// NewDAGArchive archives into dags, holding gc while a file is added and
// pinned so that GC cannot sweep its blocks in between.
func NewDAGArchive(dags *dag.Store, gc Locker) *DAGArchive {
	return &DAGArchive{dags: dags, gc: gc}
}

// Keep implements Archive.
func (a *DAGArchive) Keep(ctx context.Context, name string, f *os.File) (cid.Cid, error) {
	a.gc.RLock()
	defer a.gc.RUnlock()
	c, err := a.dags.AddFile(ctx, f)
	if err != nil {
		return cid.Undef, err
	}
	if err := a.dags.Pin(name, c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// ReadFileAt implements Archive.
func (a *DAGArchive) ReadFileAt(ctx context.Context, root cid.Cid, p []byte, off int64) (int, error) {
	return a.dags.ReadFileAt(ctx, root, p, off)
}

// Drop implements Archive.
func (a *DAGArchive) Drop(name string) error {
	if err := a.dags.Unpin(name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("unpin spilled output: %w", err)
	}
	return nil
}
