package dag

import (
	"context"
	"fmt"
	"sync"

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

// fetchBatchSize is how many missing blocks are asked for at once: enough to
// keep the pipe full, few enough to bound memory (fetchInFlight batches of
// blocks of up to 1 MiB can be buffered; 2 x 256 kept a 1 GiB fetch under
// 200 MiB of heap).
const fetchBatchSize = 256

// FetchProgress are running totals of a fetch.
type FetchProgress struct {
	Blocks, Fetched int   // blocks walked; blocks that came over the network
	FetchedBytes    int64 // bytes that came over the network
}

// fetchInFlight is how many batches of wants may be outstanding at once, so
// the links of arriving nodes are asked for while earlier batches stream in.
const fetchInFlight = 2

// fetchMinBatch is the smallest batch sent while another is in flight.
const fetchMinBatch = 128

// Fetch makes every block of the DAG at root local, asking f only for the
// blocks the store lacks. It is pipelined: the links of a node are wanted
// as soon as the node arrives, with up to fetchInFlight batches of wants
// outstanding; raw leaves already present are not read. Cancelling ctx
// stops it; blocks fetched so far stay, so a second Fetch resumes.
func (s *Store) Fetch(ctx context.Context, root cid.Cid, f Fetcher, progress func(FetchProgress)) (FetchProgress, error) {
	if s.isComplete(root) {
		return FetchProgress{}, nil
	}
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: batches end on cancellation
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var p FetchProgress
	queue := []cid.Cid{root} // to look at: present or not
	var missing []cid.Cid    // known missing, not yet asked for
	type arrival struct {
		links []cid.Cid
		err   error
		done  bool // the batch ended
		b     int  // bytes
	}
	arrivals := make(chan arrival, 256)
	inFlight := 0
	seen := map[string]struct{}{}

	startBatch := func(keys []cid.Cid) {
		inFlight++
		wg.Go(func() {
			err := s.fetchBatch(ctx, keys, f, func(l []cid.Cid, b int) {
				select {
				case arrivals <- arrival{links: l, b: b}:
				case <-ctx.Done():
				}
			})
			select {
			case arrivals <- arrival{done: true, err: err}:
			case <-ctx.Done():
			}
		})
	}
	for {
		// Look at queued CIDs: expand present nodes, collect missing ones.
		for len(queue) > 0 && len(missing) < fetchBatchSize {
			c := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			if _, dup := seen[string(c.Hash())]; dup {
				continue
			}
			seen[string(c.Hash())] = struct{}{}
			p.Blocks++
			if len(seen) > maxFetchBlocks {
				return p, fmt.Errorf("fetch %s: over %d blocks: %w", root, maxFetchBlocks, ErrHostile)
			}
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
			queue = append(queue, links...)
		}
		// Small batches are held back while others are in flight, so the
		// links of many arriving nodes are asked for together.
		for len(missing) > 0 && inFlight < fetchInFlight &&
			(len(missing) >= fetchBatchSize || len(queue) == 0 && (inFlight == 0 || len(missing) >= fetchMinBatch)) {
			n := min(fetchBatchSize, len(missing))
			batch := append([]cid.Cid(nil), missing[:n]...)
			missing = missing[n:]
			startBatch(batch)
		}
		if inFlight == 0 && len(queue) == 0 && len(missing) == 0 {
			if progress != nil {
				progress(p)
			}
			return p, s.markComplete(root)
		}
		select {
		case a := <-arrivals:
			if a.done {
				inFlight--
				if a.err != nil {
					return p, fmt.Errorf("fetch %s: %w", root, a.err)
				}
				continue
			}
			p.Fetched++
			p.FetchedBytes += int64(a.b)
			queue = append(queue, a.links...)
			if progress != nil && p.Fetched%256 == 0 {
				progress(p)
			}
		case <-ctx.Done():
			return p, ctx.Err()
		}
	}
}

// maxFetchBlocks bounds the blocks of one DAG a fetch will walk.
const maxFetchBlocks = 1 << 26

// fetchBatch fetches keys and stores them verified; for each block stored
// it reports the block's links and size. It fails if any key does not come.
func (s *Store) fetchBatch(ctx context.Context, keys []cid.Cid, f Fetcher, got func(links []cid.Cid, size int)) error {
	want := make(map[cid.Cid]struct{}, len(keys))
	for _, k := range keys {
		want[k] = struct{}{}
	}
	ch, err := f.GetBlocks(ctx, keys)
	if err != nil {
		return err
	}
	for b := range ch {
		if _, ok := want[b.Cid()]; !ok {
			continue // not asked for: never stored
		}
		if err := s.blocks.Put(ctx, b); err != nil {
			return err
		}
		delete(want, b.Cid())
		var links []cid.Cid
		if b.Cid().Prefix().Codec != cid.Raw {
			l, err := linksOf(b.Cid(), b.RawData())
			if err != nil {
				return err
			}
			links = l
		}
		got(links, len(b.RawData()))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for c := range want {
		return fmt.Errorf("%d blocks not found on the mesh, %s among them: %w", len(want), c, errdefs.ErrNotFound)
	}
	return nil
}

// links decodes a local dag-pb node's links.
func (s *Store) links(ctx context.Context, c cid.Cid) ([]cid.Cid, error) {
	b, err := s.blocks.Get(ctx, c)
	if err != nil {
		return nil, err
	}
	return linksOf(c, b.RawData())
}

// linksOf decodes the links of a dag-pb block.
func linksOf(c cid.Cid, data []byte) ([]cid.Cid, error) {
	nd, err := decodeNode(c, data)
	if err != nil {
		return nil, err
	}
	out := make([]cid.Cid, len(nd.Links()))
	for i, l := range nd.Links() {
		out[i] = l.Cid
	}
	return out, nil
}

// decodeNode decodes the dag-pb block c (data) from outside, refusing
// another codec and more links than a directory may have.
func decodeNode(c cid.Cid, data []byte) (*merkledag.ProtoNode, error) {
	if c.Prefix().Codec != cid.DagProtobuf {
		return nil, fmt.Errorf("node %s: codec %#x is not UnixFS: %w", c, c.Prefix().Codec, ErrHostile)
	}
	nd, err := merkledag.DecodeProtobuf(data)
	if err != nil {
		return nil, fmt.Errorf("node %s: %v: %w", c, err, ErrHostile)
	}
	if len(nd.Links()) > MaxDirEntries {
		return nil, fmt.Errorf("node %s: %d links: %w", c, len(nd.Links()), ErrHostile)
	}
	return nd, nil
}

// Coverage reports how many of the root's direct links are already in the
// store (the root itself must be local). A peer that holds few of them
// lacks most of the tree, and a bulk transfer suits it better than wants.
func (s *Store) Coverage(ctx context.Context, root cid.Cid) (present, total int, err error) {
	if root.Prefix().Codec != cid.DagProtobuf {
		return 0, 0, nil
	}
	links, err := s.links(ctx, root)
	if err != nil {
		return 0, 0, err
	}
	for _, l := range links {
		if has, err := s.blocks.Has(ctx, l); err != nil {
			return 0, 0, err
		} else if has {
			present++
		}
	}
	return present, len(links), nil
}

// FetchOne makes one block local through f, verified.
func (s *Store) FetchOne(ctx context.Context, c cid.Cid, f Fetcher) error {
	return s.fetchBatch(ctx, []cid.Cid{c}, f, func([]cid.Cid, int) {})
}
