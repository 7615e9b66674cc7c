// Package releasedir is the on-disk side of the self-update, shared by the
// peer that installs a release and the supervisor that starts it:
//
//	DATA/releases/VERSION/cortex-peerd   one installed release each
//	DATA/releases/current -> VERSION     what the supervisor starts
//	DATA/releases/previous -> VERSION    what a rollback returns to
//	DATA/releases/state.json             trial, bad versions, last error
//
// No current link means the binary the system installed; the system's
// binary is never written. Every change is written beside its final place,
// fsynced and switched with one rename, so that a peer killed at any
// step starts exactly one of the old and the new version afterwards.
package releasedir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Names inside the releases directory.
const (
	Current    = "current"
	Previous   = "previous"
	StateFile  = "state.json"
	BinaryName = "cortex-peerd"
	maxState   = 1 << 20
)

// ErrNoPrevious is a rollback with nothing to return to.
var ErrNoPrevious = fmt.Errorf("no previous version to roll back to: %w", errdefs.ErrNotFound)

// Failure is a version that did not come up healthy here.
type Failure struct {
	Version string    `json:"version"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	// Gossiped is set once the peer has told the mesh.
	Gossiped bool `json:"gossiped"`
}

// State is what survives restarts besides the links.
type State struct {
	// Highest is the highest version ever installed here: nothing at or
	// below it is installed again.
	Highest string `json:"highest,omitempty"`
	// Trial is the version installed and not yet proven healthy: the
	// supervisor starts it on probation and rolls it back if it fails.
	Trial string `json:"trial,omitempty"`
	// Bad lists versions rolled back here, never tried again.
	Bad map[string]Failure `json:"bad,omitempty"`
	// LastError is the last failure of an update, for update status.
	LastError string `json:"last_error,omitempty"`
	// RolledBack is set when the supervisor rolled back; the peer that
	// starts next reports it and clears it.
	RolledBack string `json:"rolled_back,omitempty"`
}

// Dir is a releases directory.
type Dir struct{ Root string }

// New is the releases directory of a data dir.
func New(dataDir string) Dir { return Dir{Root: filepath.Join(dataDir, "releases")} }

// BinaryPath is where version's binary is installed.
func (d Dir) BinaryPath(version string) string {
	return filepath.Join(d.Root, version, BinaryName)
}

// link reads a link: the version it names, "" when absent.
func (d Dir) link(name string) (string, error) {
	v, err := os.Readlink(filepath.Join(d.Root, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s link: %w", name, err)
	}
	if !validName(v) {
		return "", fmt.Errorf("%s link names %q, not a version: %w", name, v, errdefs.ErrInvalid)
	}
	return v, nil
}

// Current is the version the current link names ("" : the system's
// binary).
func (d Dir) Current() (string, error) { return d.link(Current) }

// Previous is the version the previous link names ("" : the system's
// binary, or none).
func (d Dir) Previous() (string, error) { return d.link(Previous) }

// setLink points name at version ("" removes it) with one rename.
func (d Dir) setLink(name, version string) error {
	final := filepath.Join(d.Root, name)
	if version == "" {
		if err := os.Remove(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s link: %w", name, err)
		}
		return syncDir(d.Root)
	}
	tmp := final + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("switch %s link: %w", name, err)
	}
	return syncDir(d.Root)
}

// Install writes a release's binary from r into VERSION/ with one rename:
// the binary goes into a fresh directory beside its final place, is
// fsynced, and the directory is renamed into place. A failed or cut
// install leaves nothing the supervisor would start. check runs on the
// written file before it is renamed (the signed length and hash).
func (d Dir) Install(version string, r io.Reader, check func(path string) error) error {
	if !validName(version) {
		return fmt.Errorf("install %q: not a version: %w", version, errdefs.ErrInvalid)
	}
	if err := os.MkdirAll(d.Root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", d.Root, diskKind(err))
	}
	tmpDir, err := os.MkdirTemp(d.Root, "."+version+".install-")
	if err != nil {
		return fmt.Errorf("install %s: %w", version, diskKind(err))
	}
	defer os.RemoveAll(tmpDir) // gone once renamed; cleans up a failure
	bin := filepath.Join(tmpDir, BinaryName)
	f, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return fmt.Errorf("install %s: %w", version, diskKind(err))
	}
	if err := writeSynced(f, r); err != nil {
		return fmt.Errorf("install %s: write binary: %w", version, err)
	}
	if check != nil {
		if err := check(bin); err != nil {
			return err
		}
	}
	if err := syncDir(tmpDir); err != nil {
		return err
	}
	final := filepath.Join(d.Root, version)
	// An earlier install of the same version that never became current
	// (cut, or rolled back and retried by hand) is replaced.
	if cur, _ := d.Current(); cur == version {
		return fmt.Errorf("install %s: it is the current version: %w", version, errdefs.ErrAlreadyExists)
	}
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("install %s: remove an earlier copy: %w", version, err)
	}
	if err := os.Rename(tmpDir, final); err != nil {
		return fmt.Errorf("install %s: %w", version, diskKind(err))
	}
	return syncDir(d.Root)
}

// Switch makes version current on trial and what was current previous.
// The state is written first (the trial), then previous, then current: the
// rename of current is the switch; a peer killed before it starts the old
// version and the trial is dropped as cut.
func (d Dir) Switch(version string) error {
	if _, err := os.Stat(d.BinaryPath(version)); err != nil {
		return fmt.Errorf("switch to %s: %w", version, err)
	}
	old, err := d.Current()
	if err != nil {
		return err
	}
	if err := d.Update(func(s *State) { s.Trial, s.RolledBack = version, "" }); err != nil {
		return err
	}
	if err := d.setLink(Previous, old); err != nil {
		return err
	}
	return d.setLink(Current, version)
}

// Rollback makes previous current again, marks what was current bad with
// reason, and removes the previous link. It returns the versions it
// switched from and to ("" : the system's binary).
func (d Dir) Rollback(reason string) (from, to string, err error) {
	from, err = d.Current()
	if err != nil {
		return "", "", err
	}
	to, err = d.Previous()
	if err != nil {
		return "", "", err
	}
	if from == "" {
		return "", "", ErrNoPrevious
	}
	if err := d.Update(func(s *State) {
		if s.Bad == nil {
			s.Bad = map[string]Failure{}
		}
		s.Bad[from] = Failure{Version: from, Reason: reason, At: time.Now().UTC()}
		s.Trial = ""
		s.LastError = fmt.Sprintf("%s rolled back: %s", from, reason)
		s.RolledBack = from
	}); err != nil {
		return "", "", err
	}
	if err := d.setLink(Current, to); err != nil {
		return "", "", err
	}
	return from, to, d.setLink(Previous, "")
}

// State reads the state file; a missing one is the zero state.
func (d Dir) State() (State, error) {
	var s State
	f, err := os.Open(filepath.Join(d.Root, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read release state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxState+1))
	if err != nil {
		return s, fmt.Errorf("read release state: %w", err)
	}
	if len(b) > maxState {
		return s, fmt.Errorf("release state over %d bytes: %w", maxState, errdefs.ErrInvalid)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("release state %s: %w: %w", filepath.Join(d.Root, StateFile), err, errdefs.ErrInvalid)
	}
	return s, nil
}

// Update reads the state, applies change and writes it back with one
// rename. A state file that does not parse is started over, with a note in
// LastError: losing the bad list must not keep a peer from starting.
func (d Dir) Update(change func(*State)) error {
	s, err := d.State()
	if errors.Is(err, errdefs.ErrInvalid) {
		s = State{LastError: "release state was unreadable and was reset: " + err.Error()}
	} else if err != nil {
		return err
	}
	change(&s)
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode release state: %w", err)
	}
	return d.writeFile(StateFile, append(b, '\n'))
}

// Prune removes installed versions other than current and previous, and
// leftovers of cut installs.
func (d Dir) Prune() error {
	cur, err := d.Current()
	if err != nil {
		return err
	}
	prev, err := d.Previous()
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(d.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prune releases: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || name == cur || name == prev {
			continue
		}
		if strings.HasPrefix(name, ".") || validName(name) {
			errs = append(errs, os.RemoveAll(filepath.Join(d.Root, name)))
		}
	}
	return errors.Join(errs...)
}

// validName is a version fit for a directory name: a semantic version and
// nothing that walks out of the directory.
func validName(v string) bool {
	return releasekey.ValidVersion(v) && !strings.ContainsAny(v, "/\\") && v != "." && v != ".." && !strings.HasPrefix(v, ".")
}

// writeSynced copies r into f, fsyncs and closes it; a failure is
// classified by diskKind.
func writeSynced(f *os.File, r io.Reader) error {
	_, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return diskKind(err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, diskKind(err))
	}
	return nil
}

// diskKind classifies a disk error: a full disk is resource exhaustion, a
// directory that cannot be written is permission denied.
func diskKind(err error) error {
	switch {
	case errors.Is(err, errSpace):
		return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	}
	return err
}

var errSpace = syscall.ENOSPC

// HeldFile holds the signed releases this peer serves, so that a peer that
// restarted (every peer, after an update) still answers for them.
const HeldFile = "held.json"

// SaveHeld writes the envelopes this peer holds, with one rename.
func (d Dir) SaveHeld(envs []releasekey.Signed) error {
	b, err := json.Marshal(envs)
	if err != nil {
		return fmt.Errorf("encode held releases: %w", err)
	}
	return d.writeFile(HeldFile, b)
}

// LoadHeld reads what SaveHeld wrote; a missing or unreadable file is
// none (each envelope is verified again before use).
func (d Dir) LoadHeld() []releasekey.Signed {
	b, err := os.ReadFile(filepath.Join(d.Root, HeldFile))
	if err != nil || len(b) > maxState {
		return nil
	}
	var envs []releasekey.Signed
	if json.Unmarshal(b, &envs) != nil {
		return nil
	}
	return envs
}

// writeFile writes name with one rename, fsynced.
func (d Dir) writeFile(name string, b []byte) error {
	if err := os.MkdirAll(d.Root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", d.Root, diskKind(err))
	}
	tmp, err := os.CreateTemp(d.Root, "."+name+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, diskKind(err))
	}
	defer os.Remove(tmp.Name())
	if err := writeSynced(tmp, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(d.Root, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, diskKind(err))
	}
	return syncDir(d.Root)
}
