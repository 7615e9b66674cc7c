package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// artifactPin is the pin that keeps an artifact: one per content, so the
// same screenshot twice is one pin.
func artifactPin(c cid.Cid) string { return "browser:artifact:" + c.String() }

// storeBytes adds b to the block store as a file and pins it.
func (s *Service) storeBytes(ctx context.Context, b []byte, name, mediaType string) (*apiv1.BrowserArtifact, error) {
	f, err := os.CreateTemp(s.cfg.TempDir, "artifact-*")
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	a, err := s.storeFile(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	a.Name, a.MediaType = name, mediaType
	return a, nil
}

// storePath adds the regular file at p to the block store and pins it,
// streaming it: a download of any size takes bounded memory.
func (s *Service) storePath(ctx context.Context, p string) (*apiv1.BrowserArtifact, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", p, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("store %s: %w", p, err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store %s: not a regular file: %w", p, errdefs.ErrInvalid)
	}
	return s.storeFile(ctx, f)
}

func (s *Service) storeFile(ctx context.Context, f *os.File) (*apiv1.BrowserArtifact, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// GC must not run between the add and the pin.
	s.gc.RLock()
	defer s.gc.RUnlock()
	root, err := s.dags.AddFile(ctx, f)
	if err != nil {
		return nil, err
	}
	if err := s.dags.Pin(artifactPin(root), root); err != nil {
		return nil, err
	}
	return &apiv1.BrowserArtifact{Cid: root.String(), Size: uint64(fi.Size()), Peer: s.self.String()}, nil
}

// readAll reads a file DAG of at most limit bytes from the local store.
func (s *Service) readAll(ctx context.Context, root cid.Cid, limit int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 256<<10)
	for {
		n, err := s.dags.ReadFileAt(ctx, root, buf, int64(len(out)))
		out = append(out, buf[:n]...)
		if len(out) > limit {
			return nil, fmt.Errorf("over %d bytes: %w", limit, errdefs.ErrInvalid)
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("read %s: no progress: %w", root, errdefs.ErrInvalid)
		}
	}
}

// writeFile writes a file DAG of the local store to dest (mode 0644:
// Chromium, another uid, reads it).
func (s *Service) writeFile(ctx context.Context, root cid.Cid, dest string) error {
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, rerr := s.dags.ReadFileAt(ctx, root, buf, off)
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		off += int64(n)
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			f.Close()
			return fmt.Errorf("read %s: %w", root, rerr)
		}
		if n == 0 {
			f.Close()
			return fmt.Errorf("read %s: no progress: %w", root, errdefs.ErrInvalid)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(dest, 0o644)
}
