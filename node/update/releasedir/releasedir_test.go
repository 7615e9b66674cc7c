package releasedir_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cortex-peer/cortex-peer/node/update/releasedir"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestInstallSwitchRollback(t *testing.T) {
	d := releasedir.New(t.TempDir())
	if cur, err := d.Current(); cur != "" || err != nil {
		t.Fatalf("fresh current %q, %v", cur, err)
	}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if err := d.Install(v, strings.NewReader("binary "+v), nil); err != nil {
			t.Fatal(err)
		}
		if err := d.Switch(v); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := d.Current()
	prev, _ := d.Previous()
	if cur != "1.1.0" || prev != "1.0.0" {
		t.Fatalf("current %q previous %q", cur, prev)
	}
	if b, _ := os.ReadFile(d.BinaryPath("1.1.0")); string(b) != "binary 1.1.0" {
		t.Fatalf("installed %q", b)
	}
	if st, _ := os.Stat(d.BinaryPath("1.1.0")); st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("binary mode %v: not executable", st.Mode())
	}
	st, _ := d.State()
	if st.Trial != "1.1.0" {
		t.Fatalf("trial %q", st.Trial)
	}
	from, to, err := d.Rollback("test")
	if err != nil || from != "1.1.0" || to != "1.0.0" {
		t.Fatalf("rollback %q -> %q, %v", from, to, err)
	}
	st, _ = d.State()
	if _, bad := st.Bad["1.1.0"]; !bad || st.Trial != "" {
		t.Fatalf("state after rollback %+v", st)
	}
	// Back to the system's binary, then nothing left to roll back to.
	if _, to, err := d.Rollback("again"); err != nil || to != "" {
		t.Fatalf("second rollback to %q, %v", to, err)
	}
	if _, _, err := d.Rollback("none"); !errors.Is(err, releasedir.ErrNoPrevious) {
		t.Fatalf("rollback with nothing: %v", err)
	}
	if err := d.Prune(); err != nil {
		t.Fatal(err)
	}
}

// A check that fails leaves nothing installed; names that are not
// versions never become paths.
func TestInstallRefuses(t *testing.T) {
	d := releasedir.New(t.TempDir())
	bad := errors.New("hash differs")
	if err := d.Install("1.0.0", strings.NewReader("x"), func(string) error { return bad }); !errors.Is(err, bad) {
		t.Fatalf("install with a failed check: %v", err)
	}
	for _, v := range []string{"../1.0.0", "1.0.0/..", "", ".1.0.0", "latest"} {
		if err := d.Install(v, strings.NewReader("x"), nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("install %q: %v", v, err)
		}
	}
	ents, _ := os.ReadDir(d.Root)
	if len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
	// A state file that does not parse is started over, not fatal.
	if err := os.WriteFile(filepath.Join(d.Root, releasedir.StateFile), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Update(func(s *releasedir.State) { s.Highest = "1.0.0" }); err != nil {
		t.Fatal(err)
	}
	if st, err := d.State(); err != nil || st.Highest != "1.0.0" || !strings.Contains(st.LastError, "reset") {
		t.Fatalf("state %+v, %v", st, err)
	}
	// A link that names something else is refused, not followed.
	if err := os.Symlink("../../etc", filepath.Join(d.Root, releasedir.Current)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Current(); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("current naming ../../etc: %v", err)
	}
}

// A full disk and a directory that cannot be written fail the install
// with their kind and leave the current version as it was.
func TestInstallOnFullAndReadOnlyDisks(t *testing.T) {
	dir := testnet.SmallTmpfs(t, 1)
	d := releasedir.New(dir)
	if err := d.Install("1.0.0", strings.NewReader("small"), nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Switch("1.0.0"); err != nil {
		t.Fatal(err)
	}
	big := bytes.NewReader(make([]byte, 2<<20))
	err := d.Install("1.1.0", big, nil)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("install on a full disk: %v", err)
	}
	if cur, _ := d.Current(); cur != "1.0.0" {
		t.Fatalf("current %q after a failed install", cur)
	}
	if _, err := os.Stat(filepath.Join(d.Root, "1.1.0")); err == nil {
		t.Fatal("a failed install left its version directory")
	}

	ro := testnet.SmallTmpfs(t, 1)
	if err := syscall.Mount("", ro, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	d = releasedir.New(ro)
	err = d.Install("1.1.0", strings.NewReader("x"), nil)
	if err == nil {
		t.Fatal("install into a read-only directory succeeded")
	}
	t.Logf("read-only: %v", err)
}
