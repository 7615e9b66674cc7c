package node

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/dag"
)

// CorruptBlockForTest overwrites the stored bytes of c, as a bad disk or a
// dishonest peer would: the peer then serves data that does not hash to c,
// over bitswap and over the bulk protocol. The key layout is dag's
// ("dag/b/" + multihash); no production code writes unverified blocks.
func (n *Node) CorruptBlockForTest(c cid.Cid, data []byte) error {
	key := append([]byte("dag/b/"), c.Hash()...)
	return n.store.DB().Update(func(txn *badger.Txn) error { return txn.Set(key, data) })
}

// VerifyStoreForTest hashes every stored block and fails on the first one
// whose bytes do not match its CID; it returns how many it checked.
func (n *Node) VerifyStoreForTest(ctx context.Context) (int, error) {
	ch, err := n.dags.Blocks().AllKeysChan(ctx)
	if err != nil {
		return 0, err
	}
	count := 0
	for c := range ch {
		b, err := n.dags.Blocks().Get(ctx, c)
		if err != nil {
			return count, err
		}
		if err := dag.VerifyBlock(b); err != nil {
			return count, fmt.Errorf("stored: %w", err)
		}
		count++
	}
	return count, nil
}

// FileLeavesForTest lists the leaves of the file root, held here.
func (n *Node) FileLeavesForTest(ctx context.Context, root cid.Cid) ([]dag.FileLeaf, error) {
	leaves, _, err := n.dags.FileLeaves(ctx, root, nil)
	return leaves, err
}

// DropBlocksForTest removes every block of the DAG at root from this
// store, as GC would once nothing pins it.
func (n *Node) DropBlocksForTest(ctx context.Context, root cid.Cid) error {
	leaves, _, err := n.dags.FileLeaves(ctx, root, nil)
	if err != nil {
		return err
	}
	for _, l := range leaves {
		if err := n.dags.Blocks().DeleteBlock(ctx, l.Cid); err != nil {
			return err
		}
	}
	return nil
}

// DropBlockForTest removes the block c from this store.
func (n *Node) DropBlockForTest(ctx context.Context, c cid.Cid) error {
	return n.dags.Blocks().DeleteBlock(ctx, c)
}
