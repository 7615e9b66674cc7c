// Package locate finds a peer's data directory and, in it, what a client of
// the local API needs: the socket and the token. It reads only the [api]
// section of the config file and imports nothing of the peer itself.
//
// That is the point of it: every CLI command is a new process, and Go
// initializes every package a binary links before main runs. A client that
// linked the peer (libp2p, containerd, badger) spent about 9 ms of every
// command starting them; see cmd/cortex-peer.
package locate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// EnvVar names the environment variable that chooses the data dir when no
// --data flag is given.
const EnvVar = "CORTEX_PEER_DATA"

// Names inside the data dir that a client needs.
const (
	ConfigFile   = "config.toml"
	IdentityFile = "identity.key"
	TokenFile    = "api.token"
	SocketFile   = "api.sock"
)

// Resolve picks the data dir: the flag's value, else $CORTEX_PEER_DATA, else
// ~/.cortex-peer. The result is absolute.
func Resolve(flag string) (string, error) {
	dir := flag
	if dir == "" {
		dir = os.Getenv(EnvVar)
	}
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find data dir: no --data, no $%s and no home directory: %w", EnvVar, err)
		}
		dir = filepath.Join(home, ".cortex-peer")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("data dir %s: %w", dir, err)
	}
	return abs, nil
}

// CheckInitialized reports whether root holds an initialized peer, with an
// error that tells how to create one.
func CheckInitialized(root string) error {
	if _, err := os.Stat(filepath.Join(root, IdentityFile)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no peer initialized in %s: run `cortex-peer init --data %s` first: %w", root, root, errdefs.ErrNotFound)
		}
		return fmt.Errorf("open data dir %s: %w", root, err)
	}
	return nil
}

// Join resolves a path from the config: relative paths are inside root.
func Join(root, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(root, p)
}

// API is the config's [api] section: where the local API listens and which
// file holds its token. Relative paths are inside the data dir.
type API struct {
	Socket    string `toml:"socket"`
	TokenFile string `toml:"token_file"`
}

// DefaultAPI is the [api] section of a config that does not set it.
func DefaultAPI() API { return API{Socket: SocketFile, TokenFile: TokenFile} }

// Endpoint is what a client needs to call a peer's local API.
type Endpoint struct {
	Socket string // absolute path of the unix socket
	Token  string
}

// FindAPI returns the local API of the peer in root. It decodes only the
// [api] section; the peer checks the rest of the file when it starts.
func FindAPI(root string) (Endpoint, error) {
	if err := CheckInitialized(root); err != nil {
		return Endpoint{}, err
	}
	var file struct {
		API API `toml:"api"`
	}
	file.API = DefaultAPI()
	p := filepath.Join(root, ConfigFile)
	if _, err := toml.DecodeFile(p, &file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Endpoint{}, fmt.Errorf("config %s: %v: %w", p, err, errdefs.ErrInvalid)
	}
	if file.API.Socket == "" || file.API.TokenFile == "" {
		return Endpoint{}, fmt.Errorf("config %s: [api] socket and token_file must not be empty: %w", p, errdefs.ErrInvalid)
	}
	token, err := ReadToken(Join(root, file.API.TokenFile))
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{Socket: Join(root, file.API.Socket), Token: token}, nil
}

// ReadToken reads an API token file.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read API token %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("API token file %s is empty: %w", path, errdefs.ErrInvalid)
	}
	return tok, nil
}

// RefuseDataDir is the import policy that keeps data dirs out of
// workspaces (dag.ImportOptions.Refuse): a directory holding an identity
// and a config or token is a peer's data dir, whose identity, mesh key and
// API token must never travel, whatever its path. It says why, or "".
func RefuseDataDir(has func(name string) bool) string {
	if has(IdentityFile) && (has(ConfigFile) || has(TokenFile)) {
		return "it is a cortex-peer data dir (the peer's identity, mesh key and API token): " +
			"a workspace never carries one; leave it out with a line in .cortexignore, or choose a directory that does not hold it"
	}
	return ""
}
