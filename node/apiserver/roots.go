package apiserver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Roots are the directories the API may read and write for a caller. The
// peer usually runs as root and a caller holds only the API token, so every
// path a caller names (the CLI's, and the MCP tools', which reach the peer
// only through this API) passes Resolve before anything touches it.
type Roots struct {
	dirs []string // absolute, cleaned, symlinks resolved
	// configFile is named in the refusal, so the user knows where to add a root.
	configFile string
}

// NewRoots resolves the allowed directories. A root that does not exist yet
// is kept by the path its nearest existing ancestor resolves to.
func NewRoots(dirs []string, configFile string) (Roots, error) {
	r := Roots{configFile: configFile}
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return Roots{}, fmt.Errorf("allowed root %q is not an absolute path: %w", d, errdefs.ErrInvalid)
		}
		real, err := resolvePath(filepath.Clean(d))
		if err != nil {
			return Roots{}, fmt.Errorf("allowed root %s: %w", d, err)
		}
		r.dirs = append(r.dirs, real)
	}
	return r, nil
}

// Resolve checks a path a caller named in field: it must be absolute and
// resolve, after symlinks, inside an allowed root. A path that does not
// exist yet (a `ws get` destination) is judged by its nearest existing
// ancestor. It returns the resolved path, which the caller must use from
// then on, so that a link is not followed a second time to elsewhere.
func (r Roots) Resolve(field, p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s %q must be an absolute path on the peer's machine: %w", field, p, errdefs.ErrInvalid)
	}
	p = filepath.Clean(p)
	real, err := resolvePath(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", field, p, err)
	}
	for _, d := range r.dirs {
		if within(real, d) {
			return real, nil
		}
	}
	shown := p
	if real != p {
		shown = p + " (" + real + " after symlinks)"
	}
	allowed := "none"
	if len(r.dirs) > 0 {
		allowed = strings.Join(r.dirs, ", ")
	}
	return "", fmt.Errorf("%s %s is outside the directories this peer's API may use (allowed roots: %s); "+
		"to work there, add the directory to [api] allowed_roots in %s and restart the peer: %w",
		field, shown, allowed, r.configFile, errdefs.ErrPermissionDenied)
}

// within reports whether p is dir or below it; both are clean and absolute.
func within(p, dir string) bool {
	if dir == "/" || p == dir {
		return true
	}
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}

// resolvePath resolves every symlink of p. The part of p that does not
// exist is appended to its nearest existing ancestor, resolved. A dangling
// link on the way is refused: what it would create is not known until then.
func resolvePath(p string) (string, error) {
	existing, rest := p, ""
	for {
		_, err := os.Lstat(existing)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s is a symbolic link to nothing: %w", existing, errdefs.ErrInvalid)
		}
		return "", err
	}
	return filepath.Join(real, rest), nil
}
