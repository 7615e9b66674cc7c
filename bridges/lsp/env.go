package lsp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cortex-peer/cortex-peer/bridges/procs"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"golang.org/x/mod/modfile"
)

// prepTimeout bounds the preparation of a workspace's module cache.
const prepTimeout = 2 * time.Minute

// serverEnv is a server's scrubbed environment and its working directory,
// making the dirs under Config.CacheDir that it uses:
//
//	home/       the server's HOME, GOCACHE, GOPLSCACHE, TMPDIR; the server's own
//	modcache/   Go modules the server reads (peer root: prepared by the peer, read-only to the server)
//	bin/        server binaries the server's uid could not reach where they are
func (m *Manager) serverEnv(s *Server) ([]string, string, error) {
	dir := m.cfg.CacheDir
	home := filepath.Join(dir, "home")
	asRoot := os.Geteuid() == 0
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, "", fmt.Errorf("lsp: %w", err)
	}
	if asRoot {
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, "", fmt.Errorf("lsp: %w", err)
		}
		if err := procs.Reachable(dir); err != nil {
			return nil, "", fmt.Errorf("lsp: the language servers run as uid %d and cannot reach %s: %w: %w", m.cfg.UID, dir, err, errdefs.ErrInvalid)
		}
	}
	for _, d := range []string{home, filepath.Join(home, ".cache"), filepath.Join(home, ".config"), filepath.Join(home, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, "", fmt.Errorf("lsp: %w", err)
		}
		if asRoot {
			if err := os.Chown(d, int(m.cfg.UID), int(m.cfg.GID)); err != nil {
				return nil, "", fmt.Errorf("lsp: %w", err)
			}
		}
	}
	// Go telemetry off: gopls would start a child of itself to upload.
	mode := filepath.Join(home, ".config", "go", "telemetry", "mode")
	if _, err := os.Stat(mode); err != nil {
		if err := writeOwned(mode, []byte("off\n"), m.cfg.UID, m.cfg.GID); err != nil {
			return nil, "", fmt.Errorf("lsp: %w", err)
		}
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	goBin, err := exec.LookPath("go")
	if err == nil {
		path = filepath.Dir(goBin) + ":" + path
	}
	modcache, err := m.moduleCache(s, goBin)
	if err != nil {
		return nil, "", err
	}
	env := []string{
		"HOME=" + home, "PATH=" + path, "TMPDIR=" + filepath.Join(home, "tmp"),
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"), "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"GOCACHE=" + filepath.Join(home, ".cache", "go-build"), "GOPLSCACHE=" + filepath.Join(home, ".cache", "gopls"),
		"GOMODCACHE=" + modcache, "GOFLAGS=-mod=readonly", "GOTOOLCHAIN=local", "GOPROXY=off",
		"GOTELEMETRY=off", markerEnv + "=" + filepath.Clean(dir),
	}
	env = append(env, s.cfg.Env...)
	return env, s.Root, nil
}

// moduleCache is the GOMODCACHE a server of s reads.
//
// A peer that is not root runs its servers as itself: they read its own
// module cache (GOPROXY=off and -mod=readonly: nothing is downloaded or
// written there). A root peer's servers run as Config.UID, which must not
// read the peer's files: they get CacheDir/modcache, owned by root and
// readable by all, into which the peer copies, before the server starts,
// the modules the workspace's go.mod needs that its own cache holds:
// `go mod download` run by the peer in a scratch copy of go.mod and go.sum
// (never in the workspace, which it must not change), with
// GOPROXY=file://<its module cache>/cache/download, so that nothing comes
// from the network and go.sum is checked as for any download. A module
// the peer does not hold stays missing: the server reports it as a
// diagnostic, which is the truth on a machine without network.
func (m *Manager) moduleCache(s *Server, goBin string) (string, error) {
	if os.Geteuid() != 0 {
		if v := os.Getenv("GOMODCACHE"); v != "" {
			return v, nil
		}
		out, err := exec.Command(goBin, "env", "GOMODCACHE").Output()
		if err != nil || goBin == "" {
			return filepath.Join(m.cfg.CacheDir, "modcache"), nil
		}
		return strings.TrimSpace(string(out)), nil
	}
	mc := filepath.Join(m.cfg.CacheDir, "modcache")
	if err := os.MkdirAll(mc, 0o755); err != nil {
		return "", fmt.Errorf("lsp: %w", err)
	}
	mods := moduleDirs(s.Root)
	if goBin == "" || len(mods) == 0 {
		return mc, nil
	}
	m.prepMu.Lock()
	defer m.prepMu.Unlock()
	ctx, cancel := context.WithTimeout(m.life, prepTimeout)
	defer cancel()
	for _, dir := range mods {
		t0 := time.Now()
		done, missing, err := prepareModules(ctx, goBin, dir, mc)
		switch {
		case err != nil:
			m.log.Warn("language server: the workspace's modules could not be copied for its uid", "root", s.Root, "module", dir, "err", err)
		case done:
			// Missing: modules of the graph the peer never needed, test
			// dependencies of dependencies mostly; a package that needs
			// one shows an error in the server's diagnostics.
			m.log.Info("language server: the workspace's modules copied for its uid", "root", s.Root, "module", dir,
				"not_in_peer_cache", missing, "took", time.Since(t0).Round(time.Millisecond))
		}
	}
	return mc, nil
}

// moduleDirs are the directories of the Go modules of the workspace at
// root: root itself with a go.mod, or the modules its go.work uses that
// lie inside it (a use of a directory outside the workspace is none of
// its server's: the server cannot read it either).
func moduleDirs(root string) []string {
	if hasFile(root, "go.mod") {
		return []string{root}
	}
	b, err := readFile(root, "go.work")
	if err != nil {
		return nil
	}
	wf, err := modfile.ParseWork("go.work", b, nil)
	if err != nil {
		return nil // gopls reports the broken go.work
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil
	}
	var dirs []string
	for _, u := range wf.Use {
		rel := filepath.Clean(filepath.FromSlash(u.Path))
		if !filepath.IsLocal(rel) {
			continue
		}
		// Through symlinks too, the module stays inside the workspace.
		real, err := filepath.EvalSymlinks(filepath.Join(root, rel))
		if err != nil || relTo(realRoot, real) == "" && real != realRoot {
			continue
		}
		if hasFile(real, "go.mod") && !slices.Contains(dirs, real) {
			dirs = append(dirs, real)
		}
	}
	return dirs
}

// prepareModules copies the modules root's go.mod needs from the peer's
// module cache into mc, once per content of go.mod and go.sum; done says
// whether it copied (false: done before), missing how many modules of the
// graph the peer's cache lacks.
func prepareModules(ctx context.Context, goBin, root, mc string) (done bool, missing int, err error) {
	gomod, err := readFile(root, "go.mod")
	if err != nil {
		return false, 0, err
	}
	gosum, _ := readFile(root, "go.sum")
	h := sha256.New()
	h.Write(gomod)
	h.Write([]byte{0})
	h.Write(gosum)
	sum := hex.EncodeToString(h.Sum(nil))[:32]
	mark := filepath.Join(mc, "cache", "cortex-prepared", sum)
	if _, err := os.Stat(mark); err == nil {
		return false, 0, nil
	}
	peerCache, err := exec.CommandContext(ctx, goBin, "env", "GOMODCACHE").Output()
	if err != nil {
		return false, 0, fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	src := filepath.Join(strings.TrimSpace(string(peerCache)), "cache", "download")
	scratch, err := os.MkdirTemp(filepath.Dir(mc), "modprep-")
	if err != nil {
		return false, 0, err
	}
	defer os.RemoveAll(scratch)
	if err := os.WriteFile(filepath.Join(scratch, "go.mod"), gomod, 0o600); err != nil {
		return false, 0, err
	}
	if err := os.WriteFile(filepath.Join(scratch, "go.sum"), gosum, 0o600); err != nil {
		return false, 0, err
	}
	cmd := exec.CommandContext(ctx, goBin, "mod", "download", "-json", "all")
	cmd.Dir = scratch
	cmd.Env = []string{"HOME=" + scratch, "PATH=" + filepath.Dir(goBin) + ":/usr/bin:/bin",
		"GOMODCACHE=" + mc, "GOPROXY=file://" + filepath.ToSlash(src), "GOSUMDB=off", "GOFLAGS=-mod=mod",
		"GOTOOLCHAIN=local", "GOTELEMETRY=off", "GOCACHE=" + filepath.Join(scratch, "gocache"), "GOWORK=off"}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err = cmd.Run()
	missing = strings.Count(out.String(), `"Error":`)
	if err != nil && missing == 0 {
		return false, 0, fmt.Errorf("go mod download: %w: %s", err, lastLine(out.Bytes()))
	}
	if err := os.MkdirAll(filepath.Dir(mark), 0o755); err != nil {
		return false, 0, err
	}
	if err := os.WriteFile(mark, nil, 0o644); err != nil {
		return false, 0, err
	}
	return true, missing, nil
}

// writeOwned writes a file and the dirs above it under home, owned by
// the servers' uid when the peer is root.
func writeOwned(path string, b []byte, uid, gid uint32) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return nil
	}
	for d := path; filepath.Base(d) != ".config"; d = filepath.Dir(d) {
		if err := os.Chown(d, int(uid), int(gid)); err != nil {
			return err
		}
	}
	return nil
}

func lastLine(b []byte) string {
	ls := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return string(ls[len(ls)-1])
}

func hasFile(dir, name string) bool {
	info, err := os.Stat(filepath.Join(dir, name))
	return err == nil && info.Mode().IsRegular()
}

// serverCommand is the command line to run: when the peer is root and the
// server's uid cannot reach the binary (gopls under /root/go/bin), a copy
// of it under CacheDir/bin, made again when the binary changes.
func (m *Manager) serverCommand(argv []string) ([]string, error) {
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("lsp: language server %q: %w (gopls: `make deps` installs it): %w", argv[0], err, errdefs.ErrUnavailable)
	}
	bin, _ = filepath.Abs(bin)
	if os.Geteuid() != 0 {
		return append([]string{bin}, argv[1:]...), nil
	}
	info, err := os.Stat(bin)
	if err != nil {
		return nil, fmt.Errorf("lsp: %w", err)
	}
	if procs.Reachable(filepath.Dir(bin)) == nil && info.Mode().Perm()&0o001 != 0 {
		return append([]string{bin}, argv[1:]...), nil
	}
	dst := filepath.Join(m.cfg.CacheDir, "bin", filepath.Base(bin))
	if d, err := os.Stat(dst); err != nil || d.Size() != info.Size() || !d.ModTime().Equal(info.ModTime()) {
		if err := copyBinary(bin, dst, info.ModTime()); err != nil {
			return nil, fmt.Errorf("lsp: copy %s where uid %d can run it: %w", bin, m.cfg.UID, err)
		}
	}
	return append([]string{dst}, argv[1:]...), nil
}

func copyBinary(src, dst string, mtime time.Time) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".bin-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chtimes(tmp.Name(), mtime, mtime); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// groupMemory is what the processes of pid's group use: the sum of their
// proportional set sizes (PSS), or resident sizes where the kernel gives no
// PSS.
func groupMemory(pgid int) int64 {
	var sum int64
	for _, pid := range procs.Live(procs.InGroup(pgid)) {
		sum += procs.Memory(pid)
	}
	return sum
}
