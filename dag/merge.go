package dag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/dag/diff3"
)

// TheirsSuffix is appended to a conflicting path to write THEIRS beside the
// local version, which is never touched.
const TheirsSuffix = ".theirs"

// Conflict reasons.
const (
	BothModified = "both-modified"  // both sides changed a file, and no clean line merge exists
	DeleteVsEdit = "delete-vs-edit" // THEIRS deleted what was edited locally
	EditVsDelete = "edit-vs-delete" // THEIRS edited what was deleted locally
	AddedBoth    = "added-both"     // both sides added different things at one path
	TypeChanged  = "type-changed"   // file, directory or symlink on one side, another kind on the other
	// EscapingLink: THEIRS adds or changes a symlink that points out of
	// the directory (absolute, or above its root); it is not created.
	// Links the directory had at BASE and THEIRS kept are not changes.
	EscapingLink = "escaping-link"
	// ThroughLink: the path's parent is a symlink in the directory now;
	// nothing is written, removed or read through it.
	ThroughLink = "through-link"
)

// Conflict is a path left untouched because both sides changed it.
type Conflict struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
	// TheirsPath is where THEIRS was written beside the local file, "" if
	// nothing was written (a deletion, a directory).
	TheirsPath string `json:"theirs_path,omitempty"`
	// LinkTarget is the target of THEIRS's symlink when it was not
	// created (EscapingLink).
	LinkTarget string `json:"link_target,omitempty"`
}

// MergeReport says what a merge did.
type MergeReport struct {
	Applied   []string   `json:"applied"`   // taken from THEIRS
	Merged    []string   `json:"merged"`    // line-merged text files
	Conflicts []Conflict `json:"conflicts"` // left untouched
	Unchanged int        `json:"unchanged"` // THEIRS's change was already there
}

// Merge applies the changes BASE -> THEIRS to dir, which may have been
// edited since BASE. A path changed only by THEIRS is applied; a path
// changed only locally stays; a text file changed on both sides is merged
// line-wise when the edits do not overlap; anything else is a conflict: the
// local path is left as it is and THEIRS's file is written beside it with
// TheirsSuffix. Nothing local is ever silently overwritten. Every write goes
// through os.Root, atomically (a temporary file renamed into place), and
// never through a symlink: a path whose parent is a link in dir is a
// ThroughLink conflict. A new or changed symlink of THEIRS that points out
// of dir is not created but reported (EscapingLink). Files and directories
// take THEIRS's modes as Export gives them.
func (s *Store) Merge(ctx context.Context, base, theirs cid.Cid, dir string) (MergeReport, error) {
	rep := MergeReport{Applied: []string{}, Merged: []string{}, Conflicts: []Conflict{}}
	changes, err := s.Diff(ctx, base, theirs)
	if err != nil {
		return rep, fmt.Errorf("merge into %s: %w", dir, err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return rep, fmt.Errorf("merge into %s: %w", dir, err)
	}
	defer r.Close()
	m := &merger{s: s, r: r, rep: &rep, umask: processUmask(), swept: map[string]bool{}}
	defer m.logSwept(dir)
	m.sweep(".")
	// Diff reports a replaced path as removed then added; pair them up.
	for i := 0; i < len(changes); i++ {
		c := changes[i]
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if c.Kind == Removed && i+1 < len(changes) && changes[i+1].Path == c.Path && changes[i+1].Kind == Added {
			c = Change{Path: c.Path, Kind: Modified, Before: c.Before, After: changes[i+1].After}
			i++
		}
		if err := m.apply(ctx, c); err != nil {
			return rep, fmt.Errorf("merge %s into %s: %w", c.Path, dir, err)
		}
	}
	return rep, nil
}

type merger struct {
	s     *Store
	r     *os.Root
	rep   *MergeReport
	umask os.FileMode
	// swept are the directories whose stale scratch files were looked
	// for (the root, and each one a file is written in); removed what
	// was found.
	swept   map[string]bool
	removed []string
}

// sweep removes, once per merge, the scratch files a killed merge left in
// dir (see scratch.go). It never fails a merge: what it cannot remove is
// left for the next.
func (m *merger) sweep(dir string) {
	if m.swept[dir] {
		return
	}
	m.swept[dir] = true
	removed, err := removeStaleScratchIn(m.r, dir, ScratchMerge)
	m.removed = append(m.removed, removed...)
	if err != nil {
		m.s.log.Warn("remove stale merge scratch", "err", err)
	}
}

// logSwept says, once, what the merge into dir removed.
func (m *merger) logSwept(dir string) {
	if len(m.removed) > 0 {
		m.s.log.Info("removed scratch files an interrupted merge left", "dir", dir, "paths", m.removed)
	}
}

func (m *merger) exporter() *exporter {
	return &exporter{s: m.s, umask: m.umask}
}

// localState is what the directory holds at a path now, as a CID computed
// the way Import would (no blocks stored), or cid.Undef if absent.
func (m *merger) localState(ctx context.Context, rel string) (cid.Cid, nodeKind, error) {
	info, err := m.r.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return cid.Undef, 0, nil
	}
	if err != nil {
		return cid.Undef, 0, err
	}
	switch {
	case info.Mode().IsRegular():
		f, err := m.r.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return cid.Undef, 0, err
		}
		defer f.Close()
		c, err := m.s.fileCID(ctx, f)
		return c, nodeFile, err
	case info.Mode()&fs.ModeSymlink != 0:
		target, err := m.r.Readlink(rel)
		if err != nil {
			return cid.Undef, 0, err
		}
		nd, err := symlinkNode(target)
		if err != nil {
			return cid.Undef, 0, err
		}
		return nd.Cid(), nodeSymlink, nil
	case info.IsDir():
		// A directory is compared by importing it without storing blocks.
		sub, err := m.r.OpenRoot(rel)
		if err != nil {
			return cid.Undef, 0, err
		}
		name := sub.Name()
		sub.Close()
		res, err := m.s.importDir(ctx, name, ImportOptions{NoIndex: true, topMode: true}, true)
		if err != nil {
			return cid.Undef, 0, err
		}
		return res.Root, nodeDir, nil
	}
	return cid.Undef, 0, fmt.Errorf("%s is neither file, directory nor symlink", rel)
}

func (m *merger) apply(ctx context.Context, c Change) error {
	if link, err := m.linkAbove(c.Path); err != nil {
		return err
	} else if link != "" {
		m.conflict(c.Path, ThroughLink, "")
		return nil
	}
	if c.Kind == ModeChanged && c.IsDir {
		return m.applyDirMode(ctx, c)
	}
	local, localKind, err := m.localState(ctx, c.Path)
	if err != nil {
		return err
	}
	before, after := c.Before, c.After
	switch {
	case local.Defined() && after.Defined() && local.Equals(after):
		m.rep.Unchanged++ // already what THEIRS wants
		return nil
	case !local.Defined() && !after.Defined():
		m.rep.Unchanged++ // deleted on both sides
		return nil
	case sameCID(local, before):
		// Untouched locally since BASE: take THEIRS.
		if target, escapes, err := m.escapingLink(ctx, c.Path, after); err != nil {
			return err
		} else if escapes {
			m.rep.Conflicts = append(m.rep.Conflicts, Conflict{Path: c.Path, Reason: EscapingLink, LinkTarget: target})
			return nil
		}
		if !after.Defined() {
			if err := m.r.RemoveAll(c.Path); err != nil {
				return err
			}
		} else if err := m.write(ctx, c.Path, after, true); err != nil {
			return err
		}
		m.rep.Applied = append(m.rep.Applied, c.Path)
		return nil
	}
	// Both sides changed the path.
	switch {
	case !after.Defined():
		m.conflict(c.Path, DeleteVsEdit, "")
		return nil
	case !local.Defined():
		return m.conflictWithTheirs(ctx, c.Path, EditVsDelete, after)
	case !before.Defined():
		return m.conflictWithTheirs(ctx, c.Path, AddedBoth, after)
	}
	_, afterKind, _, err := m.s.loadMaybeInline(ctx, after)
	if err != nil {
		return err
	}
	_, beforeKind, _, err := m.s.loadMaybeInline(ctx, before)
	if err != nil {
		return err
	}
	if localKind != nodeFile || afterKind != nodeFile || beforeKind != nodeFile {
		if localKind != afterKind || afterKind != beforeKind {
			return m.conflictWithTheirs(ctx, c.Path, TypeChanged, after)
		}
		// Two directories changed on both sides cannot reach here: Diff
		// recurses into them. Two different symlinks conflict.
		return m.conflictWithTheirs(ctx, c.Path, BothModified, after)
	}
	return m.mergeText(ctx, c.Path, before, after)
}

// linkAbove returns the first parent of rel that is a symlink in the
// directory now ("" if none). os.Root would follow a link that stays inside
// it; a merge follows none. (A link swapped in after this check by the
// local user can still be followed within the directory, never out of it.)
func (m *merger) linkAbove(rel string) (string, error) {
	dir := path.Dir(rel)
	if dir == "." || dir == "/" {
		return "", nil
	}
	p := ""
	for _, part := range strings.Split(dir, "/") {
		p = path.Join(p, part)
		info, err := m.r.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil // made as directories by the write
		}
		if err != nil {
			return "", err
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			return p, nil
		}
	}
	return "", nil
}

// escapingLink reports whether the node at c is a symlink that, at rel,
// would point out of the directory, and its target.
func (m *merger) escapingLink(ctx context.Context, rel string, c cid.Cid) (string, bool, error) {
	if !c.Defined() {
		return "", false, nil
	}
	_, kind, fsn, err := m.s.loadMaybeInline(ctx, c)
	if err != nil || kind != nodeSymlink {
		return "", false, err
	}
	target := string(fsn.Data())
	return target, linkEscapes(rel, target), nil
}

// applyDirMode applies a directory's change of mode: taken when the local
// directory still has BASE's mode, a conflict when it has another.
func (m *merger) applyDirMode(ctx context.Context, c Change) error {
	_, _, bf, err := m.s.loadMaybeInline(ctx, c.Before)
	if err != nil {
		return err
	}
	_, _, af, err := m.s.loadMaybeInline(ctx, c.After)
	if err != nil {
		return err
	}
	info, err := m.r.Lstat(c.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		m.conflict(c.Path, EditVsDelete, "")
		return nil
	case err != nil:
		return err
	case !info.IsDir():
		m.conflict(c.Path, TypeChanged, "")
		return nil
	}
	want := dirMode(af)
	switch info.Mode().Perm() {
	case want:
		m.rep.Unchanged++
	case dirMode(bf):
		if err := m.r.Chmod(c.Path, want); err != nil {
			return err
		}
		m.rep.Applied = append(m.rep.Applied, c.Path)
	default:
		m.conflict(c.Path, BothModified, "")
	}
	return nil
}

func sameCID(a, b cid.Cid) bool {
	if !a.Defined() || !b.Defined() {
		return !a.Defined() && !b.Defined()
	}
	return a.Equals(b)
}

// mergeText line-merges a file changed on both sides.
func (m *merger) mergeText(ctx context.Context, rel string, before, after cid.Cid) error {
	baseText, err := m.content(ctx, before)
	if err != nil {
		return err
	}
	theirsText, err := m.content(ctx, after)
	if err != nil {
		return err
	}
	ours, err := m.r.ReadFile(rel)
	if err != nil {
		return err
	}
	if baseText == nil || theirsText == nil || !diff3.IsText(ours) || !diff3.IsText(baseText) || !diff3.IsText(theirsText) {
		return m.conflictWithTheirs(ctx, rel, BothModified, after)
	}
	res := diff3.Merge(baseText, ours, theirsText, "ours", "theirs")
	if res.Conflicts > 0 {
		return m.conflictWithTheirs(ctx, rel, BothModified, after)
	}
	info, err := m.r.Lstat(rel)
	if err != nil {
		return err
	}
	if err := m.writeBytes(rel, res.Merged, info.Mode().Perm()); err != nil {
		return err
	}
	m.rep.Merged = append(m.rep.Merged, rel)
	return nil
}

// content reads a file's bytes from the store, or nil if it is too large
// for a line merge.
func (m *merger) content(ctx context.Context, c cid.Cid) ([]byte, error) {
	var buf bytes.Buffer
	w := &cappedWriter{w: &buf, left: diff3.MaxTextSize}
	if _, err := m.s.writeFile(ctx, c, w); err != nil {
		if errors.Is(err, errTooLarge) {
			return nil, nil
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

var errTooLarge = errors.New("too large for a line merge")

type cappedWriter struct {
	w    *bytes.Buffer
	left int
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if len(p) > c.left {
		return 0, errTooLarge
	}
	c.left -= len(p)
	return c.w.Write(p)
}

func (m *merger) conflict(rel, reason, theirsPath string) {
	m.rep.Conflicts = append(m.rep.Conflicts, Conflict{Path: rel, Reason: reason, TheirsPath: theirsPath})
}

// conflictWithTheirs writes THEIRS beside the local path and reports the
// conflict. Directories are reported without a copy.
func (m *merger) conflictWithTheirs(ctx context.Context, rel, reason string, after cid.Cid) error {
	_, kind, _, err := m.s.loadMaybeInline(ctx, after)
	if err != nil {
		return err
	}
	if kind == nodeDir {
		m.conflict(rel, reason, "")
		return nil
	}
	if target, escapes, err := m.escapingLink(ctx, rel, after); err != nil {
		return err
	} else if escapes {
		m.rep.Conflicts = append(m.rep.Conflicts, Conflict{Path: rel, Reason: EscapingLink, LinkTarget: target})
		return nil
	}
	beside := rel + TheirsSuffix
	for i := 1; ; i++ {
		if _, err := m.r.Lstat(beside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		beside = rel + TheirsSuffix + "." + strconv.Itoa(i)
	}
	if err := m.write(ctx, beside, after, false); err != nil {
		return err
	}
	m.conflict(rel, reason, beside)
	return nil
}

// write materializes the node at c at rel, replacing what is there when
// replace is set; through a temporary path and a rename. Symlinks in a new
// directory that point out of the tree are not created but reported.
func (m *merger) write(ctx context.Context, rel string, c cid.Cid, replace bool) error {
	if dir := path.Dir(rel); dir != "." {
		if err := m.r.MkdirAll(dir, defaultDirMode); err != nil {
			return err
		}
	}
	tmp := m.temp(rel)
	ex := m.exporter()
	if data, ok := inline(c); ok && c.Prefix().Codec == cid.Raw {
		if err := m.writeBytes(tmp, data, fileMode(nil)); err != nil {
			return err
		}
	} else {
		nd, kind, fsn, err := m.s.loadNode(ctx, c)
		if err != nil {
			return err
		}
		switch kind {
		case nodeFile:
			f, err := m.r.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fileMode(fsn))
			if err != nil {
				return err
			}
			if err := ex.exactMode(f, fileMode(fsn)); err != nil {
				m.r.Remove(tmp)
				return err
			}
			if err := ex.writeFileTo(ctx, loadedNode{c, nd, fsn}, f); err != nil {
				m.r.Remove(tmp)
				return err
			}
		case nodeSymlink:
			// An escaping link never reaches here (see escapingLink).
			target := string(fsn.Data())
			if err := checkSymlink(rel, target); err != nil {
				return err
			}
			if err := m.r.Symlink(target, tmp); err != nil {
				return err
			}
		case nodeDir:
			mode := dirMode(fsn)
			if err := m.r.Mkdir(tmp, mode); err != nil {
				return err
			}
			if ex.umasked(mode) {
				err = m.r.Chmod(tmp, mode)
			}
			if err == nil {
				err = ex.dir(ctx, m.r, tmp, nd, fsn, 0)
			}
			if err == nil {
				err = ex.links(m.r)
			}
			if err != nil {
				m.r.RemoveAll(tmp)
				return err
			}
			for _, l := range ex.res.SkippedLinks {
				m.rep.Conflicts = append(m.rep.Conflicts, Conflict{Path: path.Join(rel, strings.TrimPrefix(l.Path, tmp+"/")), Reason: EscapingLink, LinkTarget: l.Target})
			}
		}
	}
	if replace {
		if info, err := m.r.Lstat(rel); err == nil && info.IsDir() {
			if err := m.r.RemoveAll(rel); err != nil {
				m.r.RemoveAll(tmp)
				return err
			}
		}
	}
	if err := m.r.Rename(tmp, rel); err != nil {
		m.r.RemoveAll(tmp)
		return err
	}
	return nil
}

// temp names a fresh hidden path beside rel, renamed over rel once
// complete, having swept rel's directory.
func (m *merger) temp(rel string) string {
	m.sweep(path.Dir(rel))
	return path.Join(path.Dir(rel), scratchName(path.Base(rel), ScratchMerge, randomSuffix()))
}

// writeBytes replaces rel with data atomically, with mode perm exactly.
func (m *merger) writeBytes(rel string, data []byte, perm os.FileMode) error {
	tmp := m.temp(rel)
	f, err := m.r.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if err := m.exporter().exactMode(f, perm); err != nil {
		m.r.Remove(tmp)
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		m.r.Remove(tmp)
		return err
	}
	if err := m.r.Rename(tmp, rel); err != nil {
		m.r.Remove(tmp)
		return err
	}
	return nil
}
