package mcpserver

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// defaultReadBytes is what artifact_read returns unless asked: enough for
// a log's tail or a page of a report, little enough for a model's context.
const (
	defaultReadBytes = 64 << 10
	maxReadBytes     = 4 << 20
)

func (s *Server) addArtifactTools() {
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "artifact_put",
		Title:       "Add a file or a directory by content",
		Description: `Add a file or a directory on the peer's machine to its block store, pinned, and return its CID: any peer of the mesh can then get it, or read a byte range of it, with no size limit.`,
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true},
	}, s.artifactPut)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "artifact_get",
		Title:       "Fetch a file or a directory by CID into a path",
		Description: `Fetch a CID from the mesh (only the blocks this peer lacks, each verified) and write it to a path on the peer's machine: a file or a directory, as the CID is. A file comes from every peer that holds it at once; a get cut short keeps a partial copy that the same call completes. The path must not exist unless force. Returns the bytes written and the bytes each peer sent.`,
	}, s.artifactGet)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "artifact_read",
		Title:       "Read a byte range of a file by CID",
		Description: `Read bytes of a file by its CID, fetching only the blocks that hold them: text is returned as text, a PNG or JPEG as an image, other bytes as a count with their first bytes in hex. length defaults to 64 KiB (at most 4 MiB); page on with next_offset.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.artifactRead)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "artifact_unpin",
		Title:       "Let the peer free a file or a directory it put",
		Description: `Remove the pin artifact_put made on this peer for a CID, so that the next garbage collection frees its blocks (those nothing else pins). Copies other peers got are not touched. A CID this peer did not put is not_found.`,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true)},
	}, s.artifactUnpin)
}

// ArtifactUnpinInput is artifact_unpin's arguments.
type ArtifactUnpinInput struct {
	CID string `json:"cid"`
}

// ArtifactUnpinOutput is artifact_unpin's result.
type ArtifactUnpinOutput struct {
	CID      string `json:"cid"`
	Unpinned bool   `json:"unpinned"`
}

func (s *Server) artifactUnpin(ctx context.Context, _ *mcp.CallToolRequest, in ArtifactUnpinInput) (*mcp.CallToolResult, ArtifactUnpinOutput, error) {
	if in.CID == "" {
		return nil, ArtifactUnpinOutput{}, invalid("cid is required")
	}
	if err := s.api.ArtifactUnpin(ctx, in.CID); err != nil {
		return nil, ArtifactUnpinOutput{}, toolError(err)
	}
	return nil, ArtifactUnpinOutput{CID: in.CID, Unpinned: true}, nil
}

// ArtifactPutInput is artifact_put's arguments.
type ArtifactPutInput struct {
	Path string `json:"path" jsonschema:"a file or a directory on the peer's machine"`
}

// ArtifactPutOutput is artifact_put's result.
type ArtifactPutOutput struct {
	CID       string `json:"cid"`
	Bytes     uint64 `json:"bytes"`
	Directory bool   `json:"directory,omitempty"`
}

func (s *Server) artifactPut(ctx context.Context, creq *mcp.CallToolRequest, in ArtifactPutInput) (*mcp.CallToolResult, ArtifactPutOutput, error) {
	p, err := s.absPath("path", in.Path)
	if err != nil {
		return nil, ArtifactPutOutput{}, err
	}
	n := newNotifier(creq, s.log)
	r, err := s.api.ArtifactPut(ctx, p, func(pr *apiv1.Progress) {
		n.status(ctx, fmt.Sprintf("%s %d files, %d bytes", pr.GetPhase(), pr.GetDone(), pr.GetBytes()))
	})
	if err != nil {
		return nil, ArtifactPutOutput{}, toolError(err)
	}
	return nil, ArtifactPutOutput{CID: r.GetCid(), Bytes: r.GetBytes(), Directory: r.GetDirectory()}, nil
}

// ArtifactGetInput is artifact_get's arguments.
type ArtifactGetInput struct {
	CID   string `json:"cid"`
	Path  string `json:"path" jsonschema:"where to write it on the peer's machine; must not exist unless force"`
	Force bool   `json:"force,omitempty" jsonschema:"replace path if it exists, once the new copy is whole"`
}

// ArtifactGetOutput is artifact_get's result.
type ArtifactGetOutput struct {
	CID          string            `json:"cid"`
	Path         string            `json:"path"`
	Bytes        uint64            `json:"bytes"`
	FetchedBytes uint64            `json:"fetched_bytes" jsonschema:"bytes that came over the mesh (0: all were here)"`
	Providers    map[string]uint64 `json:"providers,omitempty" jsonschema:"bytes received from each peer, by peer id"`
}

func (s *Server) artifactGet(ctx context.Context, creq *mcp.CallToolRequest, in ArtifactGetInput) (*mcp.CallToolResult, ArtifactGetOutput, error) {
	if in.CID == "" {
		return nil, ArtifactGetOutput{}, invalid("cid is required")
	}
	p, err := s.absPath("path", in.Path)
	if err != nil {
		return nil, ArtifactGetOutput{}, err
	}
	n := newNotifier(creq, s.log)
	r, err := s.api.ArtifactGet(ctx, in.CID, p, in.Force, 0, func(pr *apiv1.Progress) {
		if pr.GetTotalBytes() > 0 {
			n.status(ctx, fmt.Sprintf("%s %d of %d bytes", pr.GetPhase(), pr.GetBytes(), pr.GetTotalBytes()))
			return
		}
		n.status(ctx, fmt.Sprintf("%s %d files, %d bytes", pr.GetPhase(), pr.GetDone(), pr.GetBytes()))
	})
	if err != nil {
		return nil, ArtifactGetOutput{}, toolError(err)
	}
	return nil, ArtifactGetOutput{CID: r.GetCid(), Path: r.GetPath(), Bytes: r.GetBytes(), FetchedBytes: r.GetFetchedBytes(), Providers: r.GetProviders()}, nil
}

// ArtifactReadInput is artifact_read's arguments.
type ArtifactReadInput struct {
	CID    string `json:"cid"`
	Offset uint64 `json:"offset,omitempty"`
	Length uint64 `json:"length,omitempty" jsonschema:"bytes to read (default 64 KiB, at most 4 MiB)"`
}

// ArtifactReadOutput is artifact_read's result; the bytes are its content.
type ArtifactReadOutput struct {
	Size       uint64 `json:"size" jsonschema:"the file's size"`
	Offset     uint64 `json:"offset"`
	Bytes      uint64 `json:"bytes" jsonschema:"bytes read"`
	Kind       string `json:"kind" jsonschema:"text, image or binary"`
	NextOffset uint64 `json:"next_offset,omitempty" jsonschema:"more bytes: call again with this offset"`
}

func (s *Server) artifactRead(ctx context.Context, _ *mcp.CallToolRequest, in ArtifactReadInput) (*mcp.CallToolResult, ArtifactReadOutput, error) {
	if in.CID == "" {
		return nil, ArtifactReadOutput{}, invalid("cid is required")
	}
	n := in.Length
	if n == 0 {
		n = defaultReadBytes
	}
	n = min(n, maxReadBytes)
	var buf bytes.Buffer
	size, err := s.api.ArtifactRead(ctx, in.CID, in.Offset, n, 0, &buf)
	if err != nil {
		return nil, ArtifactReadOutput{}, toolError(err)
	}
	b, off := buf.Bytes(), in.Offset
	res := &mcp.CallToolResult{}
	out := ArtifactReadOutput{Size: size}
	mime := http.DetectContentType(b)
	if text, skipped := runeAligned(b, off+uint64(len(b)) < size); (mime != "image/png" && mime != "image/jpeg") && len(text) > 0 && utf8.Valid(text) && bytes.IndexByte(text, 0) < 0 {
		// Text (UTF-8 without NUL bytes, as git tells text from binary)
		// pages on rune boundaries: a page never starts or ends inside a
		// character.
		b, off = text, off+uint64(skipped)
		out.Kind = "text"
		res.Content = []mcp.Content{&mcp.TextContent{Text: string(b)}}
	}
	out.Offset, out.Bytes = off, uint64(len(b))
	if end := off + uint64(len(b)); end < size {
		out.NextOffset = end
	}
	switch {
	case out.Kind == "text":
	case (mime == "image/png" || mime == "image/jpeg") && in.Offset == 0 && out.NextOffset == 0:
		out.Kind = "image"
		res.Content = []mcp.Content{&mcp.ImageContent{Data: b, MIMEType: mime}}
	default:
		out.Kind = "binary"
		head := b[:min(len(b), 64)]
		res.Content = []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%d bytes of binary data (%s) from offset %d of %d; the first %d in hex: %x", len(b), mime, in.Offset, size, len(head), head)}}
	}
	return res, out, nil
}

// runeAligned is b without the continuation bytes it starts with (a range
// that begins inside a character) and, when more follows, without a
// character cut at its end; skipped is how many bytes it dropped at the
// start.
func runeAligned(b []byte, more bool) (text []byte, skipped int) {
	for skipped < len(b) && skipped < utf8.UTFMax-1 && !utf8.RuneStart(b[skipped]) {
		skipped++
	}
	b = b[skipped:]
	if more {
		for i := 1; i <= utf8.UTFMax && i <= len(b); i++ {
			if utf8.RuneStart(b[len(b)-i]) {
				if !utf8.FullRune(b[len(b)-i:]) {
					b = b[:len(b)-i]
				}
				break
			}
		}
	}
	return b, skipped
}
