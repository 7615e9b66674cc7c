package datadir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestInitLayoutAndModes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "peer")
	d, err := Init(root, InitOptions{Labels: map[string]string{"zone": "eu-1"}, HeartbeatInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(root)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode: %v %v", st.Mode(), err)
	}
	for _, f := range []string{IdentityFile, MeshKeyFile, TokenFile, ConfigFile} {
		st, err := os.Stat(filepath.Join(root, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, err %v", f, st.Mode(), err)
		}
	}
	cfg, err := d.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Labels["zone"] != "eu-1" || cfg.P2P.HeartbeatInterval.Duration != 2*time.Second || cfg.P2P.HeartbeatExpiry.Duration != 6*time.Second || !cfg.P2P.MDNS {
		t.Fatalf("config does not reflect init options: %+v", cfg)
	}
	key, err := d.ReadMeshKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2p.DecodeMeshKey(key); err != nil {
		t.Fatal(err)
	}
	tok, err := d.Token(cfg)
	if err != nil || len(tok) != 64 {
		t.Fatalf("token %q: %v", tok, err)
	}
	// The identity is stable: reading it twice gives the same key.
	a, _ := d.Identity()
	b, _ := d.Identity()
	if !a.Equals(b) {
		t.Fatal("identity changed between reads")
	}
}

func TestInitRefusesExistingAndBadKey(t *testing.T) {
	root := t.TempDir()
	if _, err := Init(root, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(root, InitOptions{}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second init: %v, want ErrAlreadyExists", err)
	}
	if _, err := Init(t.TempDir(), InitOptions{MeshKey: []byte("not a key")}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad mesh key: %v, want ErrInvalid", err)
	}
	if _, err := Init(t.TempDir(), InitOptions{Bootstrap: []string{"/ip4/1.2.3.4/tcp/1"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bootstrap without peer id: %v, want ErrInvalid", err)
	}
}

func TestInitWithSharedMeshKey(t *testing.T) {
	a, err := Init(t.TempDir(), InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfgA, _ := a.LoadConfig()
	key, _ := a.ReadMeshKey(cfgA)
	b, err := Init(t.TempDir(), InitOptions{MeshKey: key})
	if err != nil {
		t.Fatal(err)
	}
	cfgB, _ := b.LoadConfig()
	keyB, _ := b.ReadMeshKey(cfgB)
	if string(key) != string(keyB) {
		t.Fatal("mesh key not shared")
	}
}

func TestOpenUninitialized(t *testing.T) {
	_, err := Open(t.TempDir())
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "cortex-peer init") {
		t.Fatalf("got %v, want ErrNotFound telling to run init", err)
	}
}

func TestLoadConfigRejects(t *testing.T) {
	tests := map[string]string{
		"unknown key":   "[p2p]\nlisten_addrs = []\n",
		"bad multiaddr": "[p2p]\nlisten = [\"tcp:1\"]\n",
		"bad allowlist": "[policy]\nallowlist = [\"nope\"]\n",
		"bad duration":  "[p2p]\nheartbeat_interval = \"soon\"\n",
		"bad log level": "[log]\nlevel = \"loud\"\n",
		"not toml":      "{{{",
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			d, err := Init(t.TempDir(), InitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d.Root, ConfigFile), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := d.LoadConfig(); !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestLockIsExclusive(t *testing.T) {
	d, err := Init(t.TempDir(), InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := d.Lock()
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Lock()
	if !errors.Is(err, errdefs.ErrLocked) || !strings.Contains(err.Error(), "in use by process") {
		t.Fatalf("second lock: %v, want ErrLocked naming the holder", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal("second unlock:", err)
	}
	l2, err := d.Lock()
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

func TestInitRefusesOpenExistingDir(t *testing.T) {
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(root, InitOptions{}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("init in a 0755 dir: %v, want ErrPermissionDenied", err)
	}
	st, _ := os.Stat(root)
	if st.Mode().Perm() != 0o755 {
		t.Fatalf("mode changed to %04o", st.Mode().Perm())
	}
	// An empty directory made for the peer is tightened and used.
	empty := t.TempDir()
	if err := os.Chmod(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(empty, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(empty); st.Mode().Perm() != 0o700 {
		t.Fatalf("empty dir left at %04o", st.Mode().Perm())
	}
}

// TestInitRecordsAllowedRoots: init writes the API's allowed roots into the
// config: the home of the user behind the command (under sudo, SUDO_USER's,
// not root's) and the temp dir, plus any given; the peer reads them back.
func TestInitRecordsAllowedRoots(t *testing.T) {
	t.Setenv("SUDO_USER", "nobody")
	t.Setenv("HOME", "/home/someone")
	want := "/home/someone"
	if os.Geteuid() == 0 {
		want = "/nonexistent" // nobody's home in /etc/passwd
	}
	d, err := Init(t.TempDir(), InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := d.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.API.AllowedRoots; len(got) != 2 || got[0] != want || got[1] != os.TempDir() {
		t.Fatalf("allowed_roots %q, want [%s %s]", got, want, os.TempDir())
	}
	b, _ := os.ReadFile(filepath.Join(d.Root, ConfigFile))
	if !strings.Contains(string(b), "allowed_roots = [\""+want+"\"") {
		t.Fatalf("config file does not record allowed_roots:\n%s", b)
	}

	d, err = Init(t.TempDir(), InitOptions{AllowedRoots: []string{"/srv/project"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = d.LoadConfig(); err != nil || len(cfg.API.AllowedRoots) != 1 || cfg.API.AllowedRoots[0] != "/srv/project" {
		t.Fatalf("allowed_roots %q, %v", cfg.API.AllowedRoots, err)
	}
	if _, err := Init(t.TempDir(), InitOptions{AllowedRoots: []string{"relative"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("relative root: %v", err)
	}
}
