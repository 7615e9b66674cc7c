package cdp

import (
	"path/filepath"
	"strings"
	"sync"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/target"
)

// Download is a file a session's pages downloaded, or are downloading,
// into the session's downloads dir.
type Download struct {
	GUID  string `json:"guid"`
	URL   string `json:"url"`
	Name  string `json:"name"` // the name the site suggested
	Path  string `json:"path"` // the file on disk (named by GUID), complete once State is completed
	Bytes int64  `json:"bytes"`
	Total int64  `json:"total"` // 0: not known
	State string `json:"state"` // in_progress, completed, canceled
}

// Download states.
const (
	DownloadInProgress = "in_progress"
	DownloadCompleted  = "completed"
	DownloadCanceled   = "canceled"
)

// downloadList is a session's downloads, in the order they began.
type downloadList struct {
	mu    sync.Mutex
	order []string
	byID  map[string]*Download
}

func (l *downloadList) put(d Download) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byID == nil {
		l.byID = map[string]*Download{}
	}
	if old, ok := l.byID[d.GUID]; ok {
		*old = d
		return
	}
	if len(l.order) >= maxEvents { // forget the oldest
		delete(l.byID, l.order[0])
		l.order = l.order[1:]
	}
	l.order = append(l.order, d.GUID)
	l.byID[d.GUID] = &d
}

func (l *downloadList) get(guid string) (Download, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.byID[guid]
	if !ok {
		return Download{}, false
	}
	return *d, true
}

// Downloads lists the session's downloads, oldest first, with their
// progress. Chromium streams each to disk as it arrives.
func (s *Session) Downloads() []Download {
	s.downloads.mu.Lock()
	defer s.downloads.mu.Unlock()
	out := make([]Download, 0, len(s.downloads.order))
	for _, g := range s.downloads.order {
		out = append(out, *s.downloads.byID[g])
	}
	return out
}

// downloadBegins notes a download; a main frame's id is its page's
// target id, which names the session. A download of a frame not known
// is matched to its session by where its file lands. in.mu is held.
func (in *instance) downloadBegins(e *browser.EventDownloadWillBegin) {
	if in.downloads == nil {
		in.downloads, in.pending = map[string]*Session{}, map[string]Download{}
	}
	d := Download{GUID: e.GUID, URL: e.URL, Name: e.SuggestedFilename, State: DownloadInProgress}
	var s *Session
	if t, ok := in.targets[target.ID(e.FrameID)]; ok {
		s = in.sessionOf(t.BrowserContextID)
	}
	if s == nil {
		if len(in.pending) < maxEvents {
			in.pending[e.GUID] = d
		}
		return
	}
	d.Path = filepath.Join(s.dir, "downloads", e.GUID)
	in.downloads[e.GUID] = s
	s.downloads.put(d)
}

// downloadProgress updates a download; in.mu is held.
func (in *instance) downloadProgress(e *browser.EventDownloadProgress) {
	s := in.downloads[e.GUID]
	var d Download
	if s != nil {
		d, _ = s.downloads.get(e.GUID)
	} else {
		var ok bool
		if d, ok = in.pending[e.GUID]; !ok || e.FilePath == "" {
			return
		}
		for _, o := range in.contexts {
			if o.dir != "" && strings.HasPrefix(e.FilePath, filepath.Join(o.dir, "downloads")+"/") {
				s = o
			}
		}
		if s == nil && in.owner != nil {
			s = in.owner
		}
		if s == nil {
			return
		}
		delete(in.pending, e.GUID)
		in.downloads[e.GUID] = s
		d.Path = filepath.Join(s.dir, "downloads", e.GUID)
	}
	d.Bytes, d.Total = int64(e.ReceivedBytes), int64(e.TotalBytes)
	switch e.State {
	case browser.DownloadProgressStateCompleted:
		d.State = DownloadCompleted
		if e.FilePath != "" {
			d.Path = e.FilePath
		}
	case browser.DownloadProgressStateCanceled:
		d.State = DownloadCanceled
	default:
		d.State = DownloadInProgress
	}
	s.downloads.put(d)
	if d.State != DownloadInProgress {
		delete(in.downloads, e.GUID)
	}
}
