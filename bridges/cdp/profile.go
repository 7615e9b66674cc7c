package cdp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// A profile in ProfilesDir/NAME holds user-data/ (Chromium's profile,
// caches left out) and state.json (the session's last State, which also
// keeps the session cookies Chromium does not write to disk).
const (
	profileData  = "user-data"
	profileState = "state.json"
)

var profileName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$`)

func validProfile(name string) bool { return profileName.MatchString(name) }

// skipInProfile are the parts of a profile not worth keeping: caches,
// crash reports, and the locks of a running Chromium.
var skipInProfile = map[string]bool{
	"Cache": true, "Code Cache": true, "GPUCache": true, "DawnCache": true, "DawnGraphiteCache": true,
	"DawnWebGPUCache": true, "GrShaderCache": true, "GraphiteDawnCache": true, "ShaderCache": true,
	"Crashpad": true, "Crash Reports": true, "component_crx_cache": true, "optimization_guide_model_store": true,
	"Safe Browsing": true, "SingletonLock": true, "SingletonSocket": true, "SingletonCookie": true,
	"BrowserMetrics": true, "BrowserMetrics-spare.pma": true,
}

// loadProfile gives s a Chromium of its own on a copy of its profile
// under the bridge's dir, and returns the profile's saved state (nil if
// it has none). b.mu is held.
func (b *Browser) loadProfile(s *Session) (*State, error) {
	in := newInstance(b, filepath.Join(b.cfg.Dir, "profiles", s.profile))
	in.owner, in.keepProfile = s, true
	s.inst = in
	src := filepath.Join(b.cfg.ProfilesDir, s.profile)
	if err := os.RemoveAll(in.dir); err != nil {
		return nil, fmt.Errorf("profile %s: %w", s.profile, err)
	}
	if err := b.mkdirOwned(in.dir); err != nil {
		return nil, err
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = int(b.cfg.UID), int(b.cfg.GID)
	}
	if err := copyTree(filepath.Join(src, profileData), in.profileDir(), uid, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("profile %s: copy it in: %w", s.profile, err)
	}
	data, err := os.ReadFile(filepath.Join(src, profileState))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", s.profile, err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		b.log.Warn("profile state unreadable; opening without it", "profile", s.profile, "err", err)
		return nil, nil
	}
	return &st, nil
}

// saveProfile stops the profile's Chromium, so that it writes its files,
// and copies the profile and the session's state back to ProfilesDir,
// replacing the copy there in one rename. s.mu is held.
func (s *Session) saveProfile() error {
	b := s.b
	if st, err := s.freshState(); err == nil {
		s.state = st
	} else {
		b.log.Warn("profile saved with the session's last seen state", "profile", s.profile, "session", s.ID, "err", err)
	}
	s.cancel()
	s.inst.shutdown(true)
	defer os.RemoveAll(s.inst.dir)
	dst := filepath.Join(b.cfg.ProfilesDir, s.profile)
	if err := os.MkdirAll(b.cfg.ProfilesDir, 0o700); err != nil {
		return fmt.Errorf("profile %s: save: %w", s.profile, err)
	}
	tmp, err := os.MkdirTemp(b.cfg.ProfilesDir, "."+s.profile+".saving-")
	if err != nil {
		return fmt.Errorf("profile %s: save: %w", s.profile, err)
	}
	defer os.RemoveAll(tmp)
	if err := copyTree(s.inst.profileDir(), filepath.Join(tmp, profileData), -1, -1); err != nil {
		return fmt.Errorf("profile %s: save: %w", s.profile, err)
	}
	data, err := json.Marshal(s.state)
	if err != nil {
		return fmt.Errorf("profile %s: save: %w", s.profile, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, profileState), data, 0o600); err != nil {
		return fmt.Errorf("profile %s: save: %w", s.profile, err)
	}
	old := tmp + ".old"
	if err := os.Rename(dst, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("profile %s: save: %w", s.profile, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Rename(old, dst)
		return fmt.Errorf("profile %s: save: %w", s.profile, err)
	}
	b.log.Info("browser profile saved", "profile", s.profile, "session", s.ID)
	return os.RemoveAll(old)
}

// freshState reads the session's state from its page, bounded; s.mu is
// held.
func (s *Session) freshState() (State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.b.cfg.ExpireTimeout)
	defer cancel()
	if !s.alive() {
		return State{}, errors.New("the tab is gone")
	}
	tab, done := context.WithCancel(s.tab)
	defer done()
	stop := context.AfterFunc(ctx, done)
	defer stop()
	s.capture(tab)
	return s.stateLocked(tab)
}

// copyTree copies the regular files and dirs under src to dst, leaving
// out what skipInProfile names and anything else (symlinks, sockets);
// with uid >= 0 what it makes is owned by uid:gid.
func copyTree(src, dst string, uid, gid int) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != src && skipInProfile[d.Name()] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
		case d.Type().IsRegular():
			if err := copyFile(p, out); err != nil {
				return err
			}
		default:
			return nil
		}
		if uid >= 0 {
			return os.Lchown(out, uid, gid)
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
