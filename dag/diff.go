package dag

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// ChangeKind says how a path differs between two trees.
type ChangeKind string

// The kinds of change.
const (
	Added       ChangeKind = "added"
	Removed     ChangeKind = "removed"
	Modified    ChangeKind = "modified"
	ModeChanged ChangeKind = "mode-changed" // same content, other permissions (for a directory: its own)
)

// Change is one path that differs. Before/After are undefined for added
// and removed paths respectively. A directory added or removed whole is one
// change with IsDir set.
type Change struct {
	Path   string     `json:"path"`
	Kind   ChangeKind `json:"kind"`
	IsDir  bool       `json:"is_dir,omitempty"`
	Before cid.Cid    `json:"-"`
	After  cid.Cid    `json:"-"`
}

// Diff lists the paths that differ from tree a to tree b, sorted by path.
// Subtrees with the same CID are skipped, so the cost follows the size of
// the change, not of the tree. Every block must be local.
func (s *Store) Diff(ctx context.Context, a, b cid.Cid) ([]Change, error) {
	var out []Change
	if err := s.diff(ctx, "", a, b, 0, &out); err != nil {
		return nil, fmt.Errorf("diff %s %s: %w", a, b, err)
	}
	slices.SortFunc(out, func(x, y Change) int { return strings.Compare(x.Path, y.Path) })
	return out, nil
}

func (s *Store) diff(ctx context.Context, rel string, a, b cid.Cid, depth int, out *[]Change) error {
	if a.Equals(b) {
		return nil
	}
	if depth > MaxDepth {
		return fmt.Errorf("%s: nested deeper than %d: %w", rel, MaxDepth, ErrHostile)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	an, ak, af, err := s.loadMaybeInline(ctx, a)
	if err != nil {
		return err
	}
	bn, bk, bf, err := s.loadMaybeInline(ctx, b)
	if err != nil {
		return err
	}
	if ak != nodeDir || bk != nodeDir {
		if ak == nodeDir || bk == nodeDir {
			*out = append(*out, Change{Path: rel, Kind: Removed, IsDir: ak == nodeDir, Before: a},
				Change{Path: rel, Kind: Added, IsDir: bk == nodeDir, After: b})
			return nil
		}
		kind := Modified
		if ak == nodeFile && bk == nodeFile && sameContent(an, af, bn, bf) {
			kind = ModeChanged
		}
		*out = append(*out, Change{Path: rel, Kind: kind, Before: a, After: b})
		return nil
	}
	if rel != "" && af.Mode().Perm() != bf.Mode().Perm() {
		*out = append(*out, Change{Path: rel, Kind: ModeChanged, IsDir: true, Before: a, After: b})
	}
	ae, err := s.readDir(ctx, an, af)
	if err != nil {
		return err
	}
	be, err := s.readDir(ctx, bn, bf)
	if err != nil {
		return err
	}
	i, j := 0, 0
	for i < len(ae) || j < len(be) {
		switch {
		case j == len(be) || i < len(ae) && ae[i].Name < be[j].Name:
			*out = append(*out, Change{Path: path.Join(rel, ae[i].Name), Kind: Removed, IsDir: s.isDir(ctx, ae[i].Cid), Before: ae[i].Cid})
			i++
		case i == len(ae) || be[j].Name < ae[i].Name:
			*out = append(*out, Change{Path: path.Join(rel, be[j].Name), Kind: Added, IsDir: s.isDir(ctx, be[j].Cid), After: be[j].Cid})
			j++
		default:
			if err := s.diff(ctx, path.Join(rel, ae[i].Name), ae[i].Cid, be[j].Cid, depth+1, out); err != nil {
				return err
			}
			i++
			j++
		}
	}
	return nil
}

// loadMaybeInline classifies a node, treating inline (identity or empty)
// raw CIDs as files without a store read.
func (s *Store) loadMaybeInline(ctx context.Context, c cid.Cid) (ipld.Node, nodeKind, *ft.FSNode, error) {
	if _, ok := inline(c); ok && c.Prefix().Codec == cid.Raw {
		return nil, nodeFile, nil, nil
	}
	return s.loadNode(ctx, c)
}

func (s *Store) isDir(ctx context.Context, c cid.Cid) bool {
	_, k, _, err := s.loadMaybeInline(ctx, c)
	return err == nil && k == nodeDir
}

// sameContent reports whether two file nodes hold the same bytes in the
// same blocks, differing only in metadata (mode).
func sameContent(an ipld.Node, af *ft.FSNode, bn ipld.Node, bf *ft.FSNode) bool {
	// A raw leaf against a dag-pb node wrapping exactly that leaf.
	if af == nil && bf != nil && len(bf.Data()) == 0 && len(bn.Links()) == 1 && an != nil {
		return bn.Links()[0].Cid.Equals(an.Cid())
	}
	if bf == nil && af != nil && len(af.Data()) == 0 && len(an.Links()) == 1 && bn != nil {
		return an.Links()[0].Cid.Equals(bn.Cid())
	}
	if af == nil || bf == nil || an == nil || bn == nil {
		return false
	}
	if string(af.Data()) != string(bf.Data()) || !slices.Equal(af.BlockSizes(), bf.BlockSizes()) {
		return false
	}
	al, bl := an.Links(), bn.Links()
	if len(al) != len(bl) {
		return false
	}
	for i := range al {
		if !al[i].Cid.Equals(bl[i].Cid) {
			return false
		}
	}
	return true
}
