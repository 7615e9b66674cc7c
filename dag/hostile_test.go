package dag

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// put stores a node built by hand, as a hostile peer would serve it.
func put(t testing.TB, s *Store, nd ipld.Node) cid.Cid {
	t.Helper()
	if err := s.blocks.Put(context.Background(), nd); err != nil {
		t.Fatal(err)
	}
	return nd.Cid()
}

func dirOf(t testing.TB, s *Store, links map[string]cid.Cid) cid.Cid {
	t.Helper()
	nd := ft.EmptyDirNode()
	_ = nd.SetCidBuilder(cidBuilder)
	for name, c := range links {
		if err := nd.AddRawLink(name, &ipld.Link{Name: name, Cid: c}); err != nil {
			t.Fatal(err)
		}
	}
	return put(t, s, nd)
}

func fileOf(t testing.TB, s *Store, content string) cid.Cid {
	t.Helper()
	b := rawLeaf([]byte(content))
	if err := s.blocks.Put(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return b.Cid()
}

func linkOf(t testing.TB, s *Store, target string) cid.Cid {
	t.Helper()
	nd, err := symlinkNode(target)
	if err != nil {
		t.Fatal(err)
	}
	return put(t, s, nd)
}

func TestExportRefusesHostileDAGs(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	f := fileOf(t, s, "payload")
	dupDir := func() cid.Cid {
		nd := ft.EmptyDirNode()
		_ = nd.SetCidBuilder(cidBuilder)
		_ = nd.AddRawLink("twice", &ipld.Link{Name: "twice", Cid: f})
		_ = nd.AddRawLink("twice", &ipld.Link{Name: "twice", Cid: f})
		return put(t, s, nd)
	}
	deep := func(n int) cid.Cid {
		c := dirOf(t, s, map[string]cid.Cid{"f": f})
		for range n {
			c = dirOf(t, s, map[string]cid.Cid{"d": c})
		}
		return c
	}
	tests := []struct {
		name string
		root cid.Cid
	}{
		{"dot-dot", dirOf(t, s, map[string]cid.Cid{"..": f})},
		{"slash in name", dirOf(t, s, map[string]cid.Cid{"a/b": f})},
		{"absolute name", dirOf(t, s, map[string]cid.Cid{"/etc": f})},
		{"empty name", dirOf(t, s, map[string]cid.Cid{"": f})},
		{"dot", dirOf(t, s, map[string]cid.Cid{".": f})},
		{"duplicate names", dupDir()},
		{"symlink with a NUL", dirOf(t, s, map[string]cid.Cid{"nul": linkOf(t, s, "a\x00b")})},
		{"nested 10000 deep", deep(10000)},
		{"root is a symlink", linkOf(t, s, "anywhere")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "out")
			_, err := s.Export(ctx, tc.root, dest, ExportOptions{})
			if !errors.Is(err, ErrHostile) || !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("got %v, want ErrHostile", err)
			}
			ents, _ := os.ReadDir(parent)
			if len(ents) != 0 {
				t.Fatalf("a failed export left %v behind", ents)
			}
		})
	}
}

func TestExportAllowsInTreeSymlinks(t *testing.T) {
	s := openStore(t)
	f := fileOf(t, s, "data")
	root := dirOf(t, s, map[string]cid.Cid{
		"file": f,
		"sub":  dirOf(t, s, map[string]cid.Cid{"up": linkOf(t, s, "../file"), "self": linkOf(t, s, ".")}),
	})
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := s.Export(context.Background(), root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dest, "sub", "up"))
	if err != nil || string(b) != "data" {
		t.Fatalf("in-tree symlink: %q %v", b, err)
	}
}

func TestBlockstoreRefusesBadBlocks(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	good := rawLeaf([]byte("hello"))
	forged, _ := blocks.NewBlockWithCid([]byte("not hello"), good.Cid())
	if err := s.blocks.Put(ctx, forged); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("block with wrong bytes: %v", err)
	}
	huge := rawLeaf(make([]byte, MaxBlockSize+1))
	if err := s.blocks.Put(ctx, huge); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("block over the cap: %v", err)
	}
	if has, _ := s.blocks.Has(ctx, good.Cid()); has {
		t.Fatal("forged block stored under the good CID")
	}
	// The empty block and identity CIDs are always there.
	h, _ := mh.Sum(nil, mh.SHA2_256, -1)
	empty := cid.NewCidV1(cid.Raw, h)
	if b, err := s.blocks.Get(ctx, empty); err != nil || len(b.RawData()) != 0 {
		t.Fatalf("empty block: %v", err)
	}
	if _, err := s.blocks.Get(ctx, rawLeaf([]byte("absent")).Cid()); !errors.Is(err, errdefs.ErrNotFound) || !ipld.IsNotFound(err) {
		t.Fatalf("missing block: %v", err)
	}
}

func TestHAMTClaimsRefused(t *testing.T) {
	s := openStore(t)
	data, err := ft.HAMTShardData(nil, 1<<30, 0x22)
	if err != nil {
		t.Fatal(err)
	}
	nd := merkledag.NodeWithData(data)
	_ = nd.SetCidBuilder(cidBuilder)
	root := put(t, s, nd)
	_, err = s.Export(context.Background(), root, filepath.Join(t.TempDir(), "out"), ExportOptions{})
	if !errors.Is(err, ErrHostile) {
		t.Fatalf("HAMT claiming 2^30 fanout: %v", err)
	}
}

func FuzzExportDAG(f *testing.F) {
	f.Add([]byte{0x0a, 0x02, 0x08, 0x01}, "name", "target")
	f.Add([]byte{}, "..", "/etc/passwd")
	f.Add([]byte{0x0a, 0x04, 0x08, 0x05, 0x28, 0xff}, "a", "../x")
	f.Fuzz(func(t *testing.T, data []byte, name, target string) {
		s := openStore(t)
		nd := merkledag.NodeWithData(data)
		_ = nd.SetCidBuilder(cidBuilder)
		child, err := symlinkNode(target)
		if err != nil {
			return
		}
		_ = nd.AddRawLink(name, &ipld.Link{Name: name, Cid: child.Cid()})
		_ = s.blocks.Put(context.Background(), child)
		if err := s.blocks.Put(context.Background(), nd); err != nil {
			return
		}
		parent := t.TempDir()
		dest := filepath.Join(parent, "out")
		_, err = s.Export(context.Background(), nd.Cid(), dest, ExportOptions{})
		if err != nil {
			ents, _ := os.ReadDir(parent)
			if len(ents) != 0 {
				t.Fatalf("failed export left %v", ents)
			}
			return
		}
		// Whatever was written stays inside dest.
		_ = filepath.Walk(dest, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			if !strings.HasPrefix(p, dest) {
				t.Fatalf("wrote %s outside %s", p, dest)
			}
			if info.Mode()&os.ModeSymlink != 0 {
				tgt, _ := os.Readlink(p)
				if filepath.IsAbs(tgt) {
					t.Fatalf("absolute symlink %s -> %s", p, tgt)
				}
			}
			return nil
		})
	})
}

func FuzzImportCAR(f *testing.F) {
	f.Add([]byte{0x0a, 0xa1, 0x67, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x01})
	f.Add([]byte("garbage"))
	// A real CAR as a seed, so mutations explore sections and blocks.
	src := openStore(f)
	dir := f.TempDir()
	writeTree(f, dir, map[string]string{"a": "x", "d/b": "y", "e": ""})
	res, err := src.Import(context.Background(), dir, ImportOptions{})
	if err != nil {
		f.Fatal(err)
	}
	var car strings.Builder
	if _, err := src.ExportCAR(context.Background(), res.Root, &car); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(car.String()))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := openStore(t)
		_, _, err := s.ImportCAR(context.Background(), strings.NewReader(string(data)))
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, context.Canceled) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}
