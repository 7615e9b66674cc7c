package cdp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/chromedp"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Tab is one page of a session: its own tab, or one its pages opened
// (popups, window.open).
type Tab struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Title  string `json:"title"`
	Active bool   `json:"active"` // the tab the session's calls drive
}

// Tabs lists the pages of the session's browser context, at most
// Config.MaxTabs: a page that opens more has them closed.
func (s *Session) Tabs(ctx context.Context) ([]Tab, error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	infos, err := chromedp.Targets(ctx)
	if err != nil {
		return nil, fmt.Errorf("tabs: %w", err)
	}
	s.inst.mu.Lock()
	first := s.inst.firstTab
	s.inst.mu.Unlock()
	var own string
	if c := chromedp.FromContext(s.tab); c != nil && c.Target != nil {
		own = string(c.Target.TargetID)
	}
	var tabs []Tab
	for _, t := range infos {
		if t.Type != "page" || t.TargetID == first || (s.profile == "" && t.BrowserContextID != s.ctxID) {
			continue
		}
		tabs = append(tabs, Tab{ID: string(t.TargetID), URL: t.URL, Title: t.Title, Active: string(t.TargetID) == own})
	}
	return tabs, nil
}

// Upload puts files into the file input a ref or selector names. The
// files must be in Dir()/uploads (the caller copies them there); they are
// handed to Chromium's uid.
func (s *Session) Upload(ctx context.Context, ref, selector string, paths []string) error {
	if len(paths) == 0 {
		return fmt.Errorf("upload: no files: %w", errdefs.ErrInvalid)
	}
	uploads, err := filepath.EvalSymlinks(filepath.Join(s.dir, "uploads"))
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	files := make([]string, 0, len(paths))
	for _, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Errorf("upload %s: %w: %w", p, err, errdefs.ErrInvalid)
		}
		if !filepath.IsAbs(p) || !strings.HasPrefix(real, uploads+"/") {
			return fmt.Errorf("upload %s: files to upload must be in the session's %s: %w", p, uploads, errdefs.ErrInvalid)
		}
		info, err := os.Stat(real)
		if err != nil || !info.Mode().IsRegular() {
			return fmt.Errorf("upload %s: not a regular file: %w", p, errdefs.ErrInvalid)
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(real, int(s.b.cfg.UID), int(s.b.cfg.GID)); err != nil {
				return fmt.Errorf("upload %s: hand it to Chromium's uid: %w", p, err)
			}
		}
		files = append(files, real)
	}
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	obj, err := s.target(ctx, ref, selector)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if _, err := chromedp.Call(ctx, dom.SetFileInputFiles, dom.SetFileInputFilesParams{Files: files, ObjectID: obj}); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}
