package lsp

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config says how the bridge runs language servers.
type Config struct {
	// Servers are the language servers by name; DefaultConfig has "gopls".
	Servers map[string]ServerConfig
	// CacheDir is the peer's persistent cache for its servers (the Go
	// build cache and gopls's cache under home/, a module cache of their
	// own under modcache/, copied binaries under bin/), so that a server
	// started again is warm fast. When the peer is root, the servers' uid
	// must be able to reach it: every directory above it must be
	// searchable by others.
	CacheDir string
	// UID and GID run the servers when the peer is root.
	UID, GID uint32
	// IdleTimeout: a server no call used for this long is shut down (it
	// starts again on the next call).
	IdleTimeout time.Duration
	// MaxServers bounds the servers running at once.
	MaxServers int
	// MaxMemoryBytes: a server using more is restarted; 0: no cap.
	MaxMemoryBytes int64
	// InitTimeout bounds a server's start up to its answer to initialize.
	InitTimeout time.Duration
	// DiagnosticsBytes bounds the diagnostics kept per server.
	DiagnosticsBytes int
	Logger           *slog.Logger
}

// ServerConfig is one language server.
type ServerConfig struct {
	// Command is the server's binary and its arguments.
	Command []string
	// Languages are the LSP language ids of its files ("go").
	Languages []string
	// Patterns are the names at a workspace's root that mark it as this
	// server's ("go.mod", "*.go"), as filepath.Match patterns.
	Patterns []string
	// InitOptions are the server's initializationOptions, also its answer
	// to workspace/configuration.
	InitOptions map[string]any
	// Env is added to the server's scrubbed environment (KEY=VALUE).
	Env []string
}

// DefaultUID runs language servers when the peer is root (cdp's Chromium
// uses 64123).
const DefaultUID = 64124

// DefaultConfig is the bridge's configuration with its cache under
// cacheDir and gopls built in.
func DefaultConfig(cacheDir string) Config {
	return Config{
		Servers: map[string]ServerConfig{"gopls": {
			Command:   []string{goplsPath()},
			Languages: []string{"go"},
			Patterns:  []string{"go.mod", "go.work", "*.go"},
			InitOptions: map[string]any{
				// gopls reports each round of diagnostics as a work-done
				// progress that ends once they are all published: the
				// signal Diagnostics waits for.
				"verboseWorkDoneProgress": true,
				"symbolStyle":             "Package",
				// Past this delay after a change gopls runs its full
				// round (analyzers over all the change touched); before
				// it, at once, it type-checks the package of an edited
				// open file and publishes that file, which is what
				// Diagnostics of that file waits for. Changes come in
				// batches from files written on disk, not keystrokes:
				// little to debounce, so the full round follows soon.
				"diagnosticsDelay": "100ms",
				// Symbols are looked up in the workspace, not in its
				// dependencies: what `lsp symbols` and a symbol given
				// for a position mean.
				"symbolScope": "workspace",
			},
		}},
		CacheDir: cacheDir, UID: DefaultUID, GID: DefaultUID,
		IdleTimeout: 15 * time.Minute, MaxServers: 8, InitTimeout: 30 * time.Second,
		DiagnosticsBytes: 4 << 20,
	}
}

// goplsPath is gopls in PATH, else where `go install` puts it.
func goplsPath() string {
	if p, err := exec.LookPath("gopls"); err == nil {
		return p
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		return filepath.Join(filepath.SplitList(gp)[0], "bin", "gopls")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, "go", "bin", "gopls")
	}
	return "gopls"
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.CacheDir == "" || !filepath.IsAbs(c.CacheDir) {
		errs = append(errs, fmt.Errorf("lsp: cache_dir %q: want an absolute path", c.CacheDir))
	}
	if len(c.Servers) == 0 {
		errs = append(errs, errors.New("lsp: no language servers configured"))
	}
	for name, s := range c.Servers {
		if len(s.Command) == 0 || s.Command[0] == "" {
			errs = append(errs, fmt.Errorf("lsp: server %q: no command", name))
		}
		if len(s.Patterns) == 0 {
			errs = append(errs, fmt.Errorf("lsp: server %q: no file patterns", name))
		}
		for _, p := range s.Patterns {
			if _, err := filepath.Match(p, ""); err != nil {
				errs = append(errs, fmt.Errorf("lsp: server %q: pattern %q: %v", name, p, err))
			}
		}
	}
	if c.IdleTimeout <= 0 || c.InitTimeout <= 0 || c.MaxServers <= 0 || c.DiagnosticsBytes <= 0 {
		errs = append(errs, errors.New("lsp: idle_timeout, init_timeout, max_servers and diagnostics_bytes must be positive"))
	}
	if c.MaxMemoryBytes < 0 {
		errs = append(errs, errors.New("lsp: max_memory must not be negative (0: no cap)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
	}
	return nil
}
