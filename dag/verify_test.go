package dag

import (
	"context"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
)

// Verify finds nothing wrong in a whole tree, then a missing leaf and a
// corrupt node, each by its CID, for the root and for the whole store.
func TestVerify(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a.txt": "alpha", "sub/b.txt": strings.Repeat("b", 5000), "big.bin": string(randomBytes(7, 3<<20))})
	im, err := s.Import(ctx, dir, ImportOptions{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Pin("test", im.Root); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Verify(ctx, im.Root, nil)
	if err != nil || !rep.OK() || rep.Blocks < 5 {
		t.Fatalf("a whole tree: %+v %v", rep, err)
	}
	all, err := s.Verify(ctx, cid.Undef, nil)
	if err != nil || !all.OK() || all.Blocks != rep.Blocks {
		t.Fatalf("the whole store: %+v %v (the tree had %d blocks)", all, err, rep.Blocks)
	}
	leaves, _, err := s.FileLeaves(ctx, fileCID(t, s, im.Root, "big.bin"), nil)
	if err != nil || len(leaves) < 2 {
		t.Fatalf("leaves: %d %v", len(leaves), err)
	}
	if err := s.Blocks().DeleteBlock(ctx, leaves[0].Cid); err != nil {
		t.Fatal(err)
	}
	sub := fileCID(t, s, im.Root, "sub")
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(blockKey(sub.Hash()), []byte("not the node")) }); err != nil {
		t.Fatal(err)
	}
	for _, root := range []cid.Cid{im.Root, cid.Undef} {
		rep, err := s.Verify(ctx, root, nil)
		if err != nil || rep.OK() || rep.MissingN != 1 || !rep.Missing[0].Equals(leaves[0].Cid) || rep.CorruptN != 1 || rep.Corrupt[0].Hash().String() != sub.Hash().String() {
			t.Fatalf("verify %s: %+v %v", root, rep, err)
		}
	}
}

// fileCID is the CID of the entry name directly under the directory root.
func fileCID(t *testing.T, s *Store, root cid.Cid, name string) cid.Cid {
	t.Helper()
	b, err := s.Blocks().Get(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := decodeNode(root, b.RawData())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range nd.Links() {
		if l.Name == name {
			return l.Cid
		}
	}
	t.Fatalf("%s not under %s", name, root)
	return cid.Undef
}

// An import skips the scratch files a peer killed in the middle of a
// merge, an export or a get leaves beside their final place; other
// dotfiles stay.
func TestImportSkipsScratch(t *testing.T) {
	s := openStore(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a.txt": "whole", ".a.txt.cortex-merge-0f3a": "half", ".big.bin.cortex-partial-abcdef": "half",
		"sub/.x.cortex-export-77": "half", ".hidden": "kept"})
	im, err := s.Import(context.Background(), dir, ImportOptions{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Blocks().Get(context.Background(), im.Root)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := decodeNode(im.Root, b.RawData())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range nd.Links() {
		names = append(names, l.Name)
	}
	if strings.Join(names, ",") != ".hidden,a.txt,sub" {
		t.Fatalf("imported %v", names)
	}
	if sub := fileCID(t, s, im.Root, "sub"); sub.Defined() {
		sb, _ := s.Blocks().Get(context.Background(), sub)
		sn, _ := decodeNode(sub, sb.RawData())
		if len(sn.Links()) != 0 {
			t.Fatalf("sub holds %d entries, want none", len(sn.Links()))
		}
	}
}
