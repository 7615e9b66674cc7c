package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// cortex-peer must not link the peer: Go initializes every linked package
// before main, and the peer's dependencies cost about 9 ms at every command
// (see package cli). This fails when an import brings them back.
func TestClientLinksNoPeer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"github.com/cortex-peer/cortex-peer/node/apiclient":      true,
		"github.com/cortex-peer/cortex-peer/node/buildinfo":      true,
		"github.com/cortex-peer/cortex-peer/node/datadir/locate": true,
		// release keygen: key files only, the standard library.
		"github.com/cortex-peer/cortex-peer/node/release/releasekey": true,
	}
	heavy := []string{
		"github.com/cortex-peer/cortex-peer/node",
		"github.com/cortex-peer/cortex-peer/p2p",
		"github.com/cortex-peer/cortex-peer/dag",
		"github.com/cortex-peer/cortex-peer/runtime",
		"github.com/cortex-peer/cortex-peer/bridges",
		"github.com/cortex-peer/cortex-peer/testnet",
		"github.com/libp2p/",
		"github.com/ipfs/",
		"github.com/containerd/",
		"github.com/dgraph-io/",
		"github.com/chromedp/",
		"google.golang.org/grpc",
	}
	for _, pkg := range strings.Fields(string(out)) {
		if allowed[pkg] {
			continue
		}
		for _, h := range heavy {
			if pkg == h || strings.HasPrefix(pkg, strings.TrimSuffix(h, "/")+"/") {
				t.Errorf("cortex-peer links %s; only cortex-peerd may", pkg)
			}
		}
	}
}

// A peer verb without cortex-peerd beside the binary or on $PATH says what
// is missing instead of failing obscurely.
func TestPeerVerbWithoutPeerBinary(t *testing.T) {
	bin := testnet.BuildBinary(t)
	alone := filepath.Join(t.TempDir(), "cortex-peer")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, b, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "/usr/bin:/bin")
	r := run(t, alone, "join", "--data", t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "cortex-peerd") || !strings.Contains(r.stderr, "make build") {
		t.Errorf("join without cortex-peerd: exit %d, stderr %q", r.code, r.stderr)
	}
	// Client verbs do not need it.
	if r := run(t, alone, "version"); r.code != 0 {
		t.Errorf("version without cortex-peerd: exit %d, stderr %q", r.code, r.stderr)
	}
}

// An unknown subcommand of a command group is a usage error (exit 2) that
// names it; the group alone prints its help and exits 0, as docker's do.
func TestUnknownSubcommandIsUsage(t *testing.T) {
	bin := testnet.BuildBinary(t)
	for _, group := range []string{"ws", "dag", "image"} {
		r := run(t, bin, group, "frob")
		if r.code != 2 || !strings.Contains(r.stderr, `unknown command "frob" for "cortex-peer `+group+`"`) {
			t.Errorf("%s frob: exit %d, stderr %q; want 2 naming the command", group, r.code, r.stderr)
		}
		if r := run(t, bin, group); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
			t.Errorf("%s alone: exit %d, stdout %q; want its help and 0", group, r.code, r.stdout)
		}
	}
}
