package dag

import (
	"context"
	"fmt"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Fetcher gets blocks the local store lacks; a bitswap session is one. Every
// block it returns is verified before it is stored.
type Fetcher interface {
	GetBlocks(ctx context.Context, keys []cid.Cid) (<-chan blocks.Block, error)
}

// fetchBatch is how many missing blocks are asked for at once: enough to
// keep the pipe full, few enough to bound memory.
const fetchBatch = 1024

// FetchProgress are running totals of a fetch.
type FetchProgress struct {
	Blocks, Fetched int   // blocks walked; blocks that came over the network
	FetchedBytes    int64 // bytes that came over the network
}

// Fetch makes every block of the DAG at root local, asking f only for the
// blocks the store lacks. It walks breadth-first with a bounded frontier;
// raw leaves already present are not read. Cancelling ctx stops it; blocks
// fetched so far stay, so a second Fetch resumes.
func (s *Store) Fetch(ctx context.Context, root cid.Cid, f Fetcher, progress func(FetchProgress)) (FetchProgress, error) {
	var p FetchProgress
	frontier := []cid.Cid{root}
	for depth := 0; len(frontier) > 0; depth++ {
		if depth > 2*MaxDepth {
			return p, fmt.Errorf("fetch %s: deeper than %d: %w", root, 2*MaxDepth, ErrHostile)
		}
		var next []cid.Cid
		var missing []cid.Cid
		for _, c := range frontier {
			if err := ctx.Err(); err != nil {
				return p, err
			}
			p.Blocks++
			has, err := s.blocks.Has(ctx, c)
			if err != nil {
				return p, err
			}
			if !has {
				missing = append(missing, c)
				continue
			}
			if c.Prefix().Codec == cid.Raw {
				continue
			}
			links, err := s.links(ctx, c)
			if err != nil {
				return p, err
			}
			next = append(next, links...)
		}
		for len(missing) > 0 {
			batch := missing[:min(fetchBatch, len(missing))]
			missing = missing[len(batch):]
			got, err := s.fetchBatch(ctx, batch, f, &p, progress)
			if err != nil {
				return p, fmt.Errorf("fetch %s: %w", root, err)
			}
			next = append(next, got...)
		}
		if progress != nil {
			progress(p)
		}
		frontier = next
	}
	return p, nil
}

// fetchBatch fetches keys, stores them verified, and returns their links.
func (s *Store) fetchBatch(ctx context.Context, keys []cid.Cid, f Fetcher, p *FetchProgress, progress func(FetchProgress)) ([]cid.Cid, error) {
	want := make(map[cid.Cid]struct{}, len(keys))
	for _, k := range keys {
		want[k] = struct{}{}
	}
	ch, err := f.GetBlocks(ctx, keys)
	if err != nil {
		return nil, err
	}
	var links []cid.Cid
	for b := range ch {
		if _, ok := want[b.Cid()]; !ok {
			continue // not asked for: never stored
		}
		if err := s.blocks.Put(ctx, b); err != nil {
			return nil, err
		}
		delete(want, b.Cid())
		p.Fetched++
		p.FetchedBytes += int64(len(b.RawData()))
		if b.Cid().Prefix().Codec != cid.Raw {
			l, err := s.links(ctx, b.Cid())
			if err != nil {
				return nil, err
			}
			links = append(links, l...)
		}
		if progress != nil && p.Fetched%256 == 0 {
			progress(*p)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(want) > 0 {
		for c := range want {
			return nil, fmt.Errorf("%d blocks not found on the mesh, %s among them: %w", len(want), c, errdefs.ErrNotFound)
		}
	}
	return links, nil
}

// links decodes a local dag-pb node's links.
func (s *Store) links(ctx context.Context, c cid.Cid) ([]cid.Cid, error) {
	if c.Prefix().Codec != cid.DagProtobuf {
		return nil, fmt.Errorf("node %s: codec %#x is not UnixFS: %w", c, c.Prefix().Codec, ErrHostile)
	}
	b, err := s.blocks.Get(ctx, c)
	if err != nil {
		return nil, err
	}
	nd, err := merkledag.DecodeProtobuf(b.RawData())
	if err != nil {
		return nil, fmt.Errorf("node %s: %v: %w", c, err, ErrHostile)
	}
	if len(nd.Links()) > MaxDirEntries {
		return nil, fmt.Errorf("node %s: %d links: %w", c, len(nd.Links()), ErrHostile)
	}
	out := make([]cid.Cid, len(nd.Links()))
	for i, l := range nd.Links() {
		out[i] = l.Cid
	}
	return out, nil
}
