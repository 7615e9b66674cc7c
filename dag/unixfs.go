package dag

import (
	"crypto/sha256"
	"fmt"
	"os"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// linksPerNode is the fan-out of a file's tree of dag-pb nodes, as Kubo's
// balanced layout (a node of 174 links stays well under 8 KiB).
const linksPerNode = 174

// cidBuilder makes CIDv1 dag-pb nodes hashed with sha256.
var cidBuilder = cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}

// rawLeaf returns the raw block of one chunk. crypto/sha256 is called
// directly: it uses the CPU's SHA extensions where present.
func rawLeaf(data []byte) blocks.Block {
	d := sha256.Sum256(data)
	h, _ := mh.Encode(d[:], mh.SHA2_256) // cannot fail for sha2-256
	b, _ := blocks.NewBlockWithCid(data, cid.NewCidV1(cid.Raw, h))
	return b
}

// emptyFileCID is the identity CID of zero raw bytes: an empty file needs no
// block at all.
var emptyFileCID = func() cid.Cid {
	h, _ := mh.Sum(nil, mh.IDENTITY, -1)
	return cid.NewCidV1(cid.Raw, h)
}()

// leaf is one child of a file node: its CID, its file bytes and the size of
// the subtree's blocks (the link's Tsize).
type leaf struct {
	cid       cid.Cid
	fileBytes uint64
	tsize     uint64
	sum       uint32 // CRC-32C of a raw leaf's bytes, for packs (see packRef)
}

// fileNode builds one dag-pb file node over children; mode is set on the
// root only (0 for none).
func fileNode(children []leaf, mode os.FileMode) (*merkledag.ProtoNode, leaf, error) {
	fs := ft.NewFSNode(ft.TFile)
	nd := new(merkledag.ProtoNode)
	if err := nd.SetCidBuilder(cidBuilder); err != nil {
		return nil, leaf{}, err
	}
	var total, tsize uint64
	for _, c := range children {
		fs.AddBlockSize(c.fileBytes)
		if err := nd.AddRawLink("", &ipld.Link{Cid: c.cid, Size: c.tsize}); err != nil {
			return nil, leaf{}, err
		}
		total += c.fileBytes
		tsize += c.tsize
	}
	if mode != 0 {
		fs.SetMode(mode)
	}
	data, err := fs.GetBytes()
	if err != nil {
		return nil, leaf{}, fmt.Errorf("encode file node: %w", err)
	}
	nd.SetData(data)
	return nd, leaf{cid: nd.Cid(), fileBytes: total, tsize: tsize + uint64(len(nd.RawData()))}, nil
}

// symlinkNode builds the UnixFS node of a symbolic link.
func symlinkNode(target string) (*merkledag.ProtoNode, error) {
	data, err := ft.SymlinkData(target)
	if err != nil {
		return nil, err
	}
	nd := merkledag.NodeWithData(data)
	if err := nd.SetCidBuilder(cidBuilder); err != nil {
		return nil, err
	}
	return nd, nil
}
