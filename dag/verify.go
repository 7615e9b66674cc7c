package dag

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	Blocks int   // checked
	Bytes  int64 // of the blocks checked
	// Missing are blocks a root needs that are not here; Corrupt, blocks
	// here whose bytes do not hash to their CID (or whose pack is damaged).
	// Each lists its first maxReported; the counts are whole.
	Missing, Corrupt   []cid.Cid
	MissingN, CorruptN int
}

// OK reports whether nothing is missing or corrupt.
func (r VerifyReport) OK() bool { return r.MissingN == 0 && r.CorruptN == 0 }

const maxReported = 100

func (r *VerifyReport) missing(c cid.Cid) {
	if r.MissingN++; len(r.Missing) < maxReported {
		r.Missing = append(r.Missing, c)
	}
}

func (r *VerifyReport) corrupt(c cid.Cid) {
	if r.CorruptN++; len(r.Corrupt) < maxReported {
		r.Corrupt = append(r.Corrupt, c)
	}
}

// Verify checks, as `ipfs repo verify` does, that every block the DAG of
// root needs is here and hashes to its CID. With an undefined root it
// checks the DAG of every pin, then every other block of the store.
// progress, if set, is called now and then with the running report. It
// reads every byte it checks; it changes nothing.
func (s *Store) Verify(ctx context.Context, root cid.Cid, progress func(VerifyReport)) (VerifyReport, error) {
	var rep VerifyReport
	seen := map[string]struct{}{}
	report := func() {
		if progress != nil && rep.Blocks%1024 == 0 {
			progress(rep)
		}
	}
	// check verifies one block and returns its links (for dag-pb).
	check := func(c cid.Cid) ([]cid.Cid, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, ok := seen[string(c.Hash())]; ok {
			return nil, nil
		}
		seen[string(c.Hash())] = struct{}{}
		if _, ok := inline(c); ok {
			return nil, nil
		}
		b, err := s.blocks.Get(ctx, c)
		if errors.Is(err, errdefs.ErrNotFound) {
			if has, _ := s.blocks.Has(ctx, c); has {
				rep.corrupt(c) // the key is here, its bytes are not readable
			} else {
				rep.missing(c)
			}
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		rep.Blocks++
		rep.Bytes += int64(len(b.RawData()))
		report()
		if VerifyBlock(b) != nil {
			rep.corrupt(c)
			return nil, nil
		}
		if c.Prefix().Codec != cid.DagProtobuf {
			return nil, nil
		}
		links, err := linksOf(c, b.RawData())
		if err != nil {
			rep.corrupt(c) // it hashes right, yet is no dag-pb node
			return nil, nil
		}
		return links, nil
	}
	walk := func(root cid.Cid) error {
		stack := []cid.Cid{root}
		for len(stack) > 0 {
			c := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			links, err := check(c)
			if err != nil {
				return err
			}
			stack = append(stack, links...)
		}
		return nil
	}
	if root.Defined() {
		if err := walk(root); err != nil {
			return rep, fmt.Errorf("verify %s: %w", root, err)
		}
		return rep, nil
	}
	pins, err := s.Pins()
	if err != nil {
		return rep, err
	}
	for name, r := range pins {
		if err := walk(r); err != nil {
			return rep, fmt.Errorf("verify pin %s: %w", name, err)
		}
	}
	kctx, cancel := context.WithCancel(ctx) // ends the key walk on an early return
	defer cancel()
	keys, err := s.blocks.AllKeysChan(kctx)
	if err != nil {
		return rep, err
	}
	for c := range keys {
		if _, err := check(c); err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
	}
	if progress != nil {
		progress(rep)
	}
	return rep, ctx.Err()
}

// Whole reports whether every block of the DAG at root is in the store
// (present; Verify also reads and hashes them).
func (s *Store) Whole(ctx context.Context, root cid.Cid) (bool, error) {
	seen := map[string]struct{}{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := seen[string(c.Hash())]; ok {
			continue
		}
		seen[string(c.Hash())] = struct{}{}
		if has, err := s.blocks.Has(ctx, c); err != nil || !has {
			return false, err
		}
		if c.Prefix().Codec != cid.DagProtobuf {
			continue
		}
		links, err := s.links(ctx, c)
		if err != nil {
			return false, err
		}
		stack = append(stack, links...)
	}
	return true, nil
}
