package dag

import (
	"context"
	"fmt"
	"sync"

	pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
)

// deltaParallel is how many changed subtrees FetchAgainst fetches at once.
const deltaParallel = 4

// FetchAgainst makes the DAG at root local, as Fetch does, for a root that
// shares most of its tree with base, which must be complete here (a
// workspace's earlier root, a task's base): it walks root against base,
// level by level, skipping every subtree whose CID base has at the same
// path, so only the directories on the way to a change and the changed
// subtrees themselves are asked for and read. Without a complete base it is
// Fetch.
func (s *Store) FetchAgainst(ctx context.Context, base, root cid.Cid, f Fetcher, progress func(FetchProgress)) (FetchProgress, error) {
	if s.isComplete(root) {
		return FetchProgress{}, nil
	}
	if !base.Defined() || !s.isComplete(base) {
		return s.Fetch(ctx, root, f, progress)
	}
	var mu sync.Mutex
	var p FetchProgress
	add := func(q FetchProgress) {
		mu.Lock()
		p.Blocks += q.Blocks
		p.Fetched += q.Fetched
		p.FetchedBytes += q.FetchedBytes
		if progress != nil {
			progress(p)
		}
		mu.Unlock()
	}
	type pair struct {
		a, b  cid.Cid
		depth int
	}
	level := []pair{{base, root, 0}}
	var whole []cid.Cid // subtrees with nothing to skip in them
	for len(level) > 0 {
		// This level's nodes of root, the missing ones in one batch.
		var missing []cid.Cid
		for _, pr := range level {
			if _, isInline := inline(pr.b); isInline {
				continue
			}
			if has, err := s.blocks.Has(ctx, pr.b); err != nil {
				return p, err
			} else if !has {
				missing = append(missing, pr.b)
			}
		}
		if len(missing) > 0 {
			err := s.fetchBatch(ctx, missing, f, func(_ []cid.Cid, size int) {
				add(FetchProgress{Blocks: 1, Fetched: 1, FetchedBytes: int64(size)})
			})
			if err != nil {
				return p, fmt.Errorf("fetch %s: %w", root, err)
			}
		}
		var next []pair
		for _, pr := range level {
			if pr.depth > MaxDepth {
				return p, fmt.Errorf("fetch %s: nested deeper than %d: %w", root, MaxDepth, ErrHostile)
			}
			if err := ctx.Err(); err != nil {
				return p, err
			}
			an, ak, af, err := s.loadMaybeInline(ctx, pr.a)
			if err != nil {
				return p, err
			}
			bn, bk, bf, err := s.loadMaybeInline(ctx, pr.b)
			if err != nil {
				return p, err
			}
			if ak != nodeDir || bk != nodeDir || af.Type() == pb.Data_HAMTShard || bf.Type() == pb.Data_HAMTShard {
				// A file, a kind change, or a sharded directory (whose
				// inner nodes do not pair by name): fetched whole.
				whole = append(whole, pr.b)
				continue
			}
			ae, err := s.readDir(ctx, an, af)
			if err != nil {
				return p, err
			}
			be, err := s.readDir(ctx, bn, bf)
			if err != nil {
				return p, err
			}
			before := make(map[string]cid.Cid, len(ae))
			for _, e := range ae {
				before[e.Name] = e.Cid
			}
			for _, e := range be {
				switch was, ok := before[e.Name]; {
				case !ok:
					whole = append(whole, e.Cid)
				case !was.Equals(e.Cid):
					next = append(next, pair{was, e.Cid, pr.depth + 1})
				}
			}
		}
		level = next
	}
	// The changed subtrees, a few at a time; each is pipelined by Fetch.
	sem := make(chan struct{}, deltaParallel)
	var wg sync.WaitGroup
	var firstErr error
	for _, c := range whole {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			q, err := s.Fetch(ctx, c, f, nil)
			add(q)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return p, fmt.Errorf("fetch %s: %w", root, firstErr)
	}
	return p, s.markComplete(root)
}
