// Package datadir owns the layout of a peer's data directory: its config
// file, identity, mesh key, API token, API socket, store and lock. The CLI
// uses it to find a peer; the node uses it to start one.
//
// datadir imports p2p only to generate keys; it must not import node.
package datadir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// File names inside the data dir. Those a client needs are in locate.
const (
	ConfigFile   = locate.ConfigFile
	IdentityFile = locate.IdentityFile
	TokenFile    = locate.TokenFile
	SocketFile   = locate.SocketFile
	MeshKeyFile  = "mesh.key"
	StoreDir     = "store"
	LockFile     = "peer.lock"
)

// Dir is an initialized data directory.
type Dir struct {
	Root string
}

// InitOptions are the choices `cortex-peer init` offers.
type InitOptions struct {
	// MeshKey is the content of an existing mesh key file; nil makes a new mesh.
	MeshKey []byte
	// Listen, Bootstrap and Labels are written into the new config file.
	Listen    []string
	Bootstrap []string
	Labels    map[string]string
	// DisableMDNS turns local-network discovery off in the new config.
	DisableMDNS bool
	// HeartbeatInterval, when set, replaces the default interval; the
	// expiry is three intervals.
	HeartbeatInterval time.Duration
	// AllowedRoots, when not nil, replaces DefaultAllowedRoots as the
	// config's [api] allowed_roots.
	AllowedRoots []string
}

// Init creates a data dir (mode 0700) with a new identity, a mesh key, an API
// token and a documented config file. It refuses a dir that already holds an
// identity, so an existing peer's id is never lost.
func Init(root string, opts InitOptions) (Dir, error) {
	d := Dir{Root: root}
	if _, err := os.Stat(d.path(IdentityFile)); err == nil {
		return Dir{}, fmt.Errorf("init %s: already initialized (identity.key exists); use another --data dir: %w", root, errdefs.ErrAlreadyExists)
	}
	var meshKey []byte
	if opts.MeshKey != nil {
		if _, err := p2p.DecodeMeshKey(opts.MeshKey); err != nil {
			return Dir{}, fmt.Errorf("init %s: %w", root, err)
		}
		meshKey = opts.MeshKey
	} else {
		k, err := p2p.GenerateMeshKey()
		if err != nil {
			return Dir{}, err
		}
		meshKey = k
	}
	if err := validateConfigLists(opts.Listen, opts.Bootstrap, opts.Labels); err != nil {
		return Dir{}, fmt.Errorf("init %s: %w: %w", root, errdefs.ErrInvalid, err)
	}
	if opts.HeartbeatInterval < 0 {
		return Dir{}, fmt.Errorf("init %s: negative heartbeat interval: %w", root, errdefs.ErrInvalid)
	}
	for _, r := range opts.AllowedRoots {
		if !filepath.IsAbs(r) {
			return Dir{}, fmt.Errorf("init %s: allowed root %q is not an absolute path: %w", root, r, errdefs.ErrInvalid)
		}
	}
	if err := makePrivateDir(root); err != nil {
		return Dir{}, fmt.Errorf("init %s: %w", root, err)
	}
	sk, err := p2p.GenerateIdentity()
	if err != nil {
		return Dir{}, err
	}
	skBytes, err := p2p.MarshalIdentity(sk)
	if err != nil {
		return Dir{}, err
	}
	token, err := newToken()
	if err != nil {
		return Dir{}, err
	}
	// The identity is written last: its presence marks a complete init, so
	// an interrupted init can simply be run again.
	files := []struct {
		name string
		data []byte
	}{
		{MeshKeyFile, meshKey},
		{TokenFile, []byte(token + "\n")},
		{ConfigFile, []byte(renderConfig(opts))},
		{IdentityFile, skBytes},
	}
	for _, f := range files {
		if err := writeFileAtomic(d.path(f.name), f.data, 0o600); err != nil {
			return Dir{}, fmt.Errorf("init %s: %w", root, err)
		}
	}
	return d, nil
}

// makePrivateDir creates root with mode 0700. An existing empty directory is
// tightened to 0700; a non-empty one is used only if others have no access to
// it, as its mode is never changed behind the user's back (think of --data ~).
func makePrivateDir(root string) error {
	st, err := os.Stat(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(root, 0o700); err != nil {
			return err
		}
		return os.Chmod(root, 0o700) // the umask may have narrowed it; never widened
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory: %w", root, errdefs.ErrInvalid)
	case st.Mode().Perm()&0o077 == 0:
		return nil
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return os.Chmod(root, 0o700)
	}
	return fmt.Errorf("%s exists with mode %04o, open to other users; use a new directory or `chmod 700` it: %w", root, st.Mode().Perm(), errdefs.ErrPermissionDenied)
}

// Open returns the data dir at root, or an error telling how to create it.
func Open(root string) (Dir, error) {
	if err := locate.CheckInitialized(root); err != nil {
		return Dir{}, err
	}
	return Dir{Root: root}, nil
}

// Load opens the data dir at root and reads its config file.
func Load(root string) (Dir, FileConfig, error) {
	d, err := Open(root)
	if err != nil {
		return Dir{}, FileConfig{}, err
	}
	fc, err := d.LoadConfig()
	if err != nil {
		return Dir{}, FileConfig{}, err
	}
	return d, fc, nil
}

func (d Dir) path(name string) string { return filepath.Join(d.Root, name) }

// Path resolves a path from the config: relative paths are inside the data dir.
func (d Dir) Path(p string) string { return locate.Join(d.Root, p) }

// Identity reads the peer's private key.
func (d Dir) Identity() (crypto.PrivKey, error) {
	b, err := os.ReadFile(d.path(IdentityFile))
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	sk, err := p2p.UnmarshalIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.path(IdentityFile), err)
	}
	return sk, nil
}

// ReadMeshKey reads the mesh key file named by the config (relative to the
// data dir), in the format `cortex-peer mesh-key` prints.
func (d Dir) ReadMeshKey(cfg FileConfig) ([]byte, error) {
	if cfg.P2P.MeshKeyFile == "" {
		return nil, nil
	}
	p := d.Path(cfg.P2P.MeshKeyFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read mesh key %s: %w", p, err)
	}
	return b, nil
}

// Token reads the API token named by the config.
func (d Dir) Token(cfg FileConfig) (string, error) {
	return locate.ReadToken(d.Path(cfg.API.TokenFile))
}

func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate API token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// writeFileAtomic writes beside the target and renames, so a crash never
// leaves a half-written key or config.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
