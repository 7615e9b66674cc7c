package dag

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
)

// maxSampleWalk bounds the blocks Sample visits: past it, the sample is
// taken from the part of the DAG seen so far.
const maxSampleWalk = 200_000

// Sample returns up to n CIDs spread evenly over the blocks of the local DAG
// at root (the root first, then in breadth-first order), so a peer that
// holds a fraction of them holds about that fraction of the DAG's blocks. Placement
// asks candidates which of them they have. Inline (identity) CIDs are left
// out: every peer has them.
func (s *Store) Sample(ctx context.Context, root cid.Cid, n int) ([]cid.Cid, error) {
	if n <= 0 {
		return nil, nil
	}
	queue := []cid.Cid{root}
	seen := map[cid.Cid]struct{}{root: {}}
	var all []cid.Cid
	for i := 0; i < len(queue) && len(all) < maxSampleWalk; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := queue[i]
		if _, isInline := inline(c); !isInline {
			all = append(all, c)
		}
		if c.Prefix().Codec != cid.DagProtobuf {
			continue
		}
		links, err := s.links(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("sample %s: %w", root, err)
		}
		for _, l := range links {
			if _, ok := seen[l]; !ok {
				seen[l] = struct{}{}
				queue = append(queue, l)
			}
		}
	}
	if len(all) <= n {
		return all, nil
	}
	out := make([]cid.Cid, 0, n)
	for i := range n {
		out = append(out, all[i*len(all)/n])
	}
	return out, nil
}
