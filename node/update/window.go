package update

import (
	"fmt"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Window is the daily time of day installs may start, in local time;
// the zero Window is always open.
type Window struct {
	from, to time.Duration // since midnight
	set      bool
}

// ParseWindow reads "HH:MM-HH:MM" ("" : always open). A window whose end
// is before its start wraps past midnight ("22:00-04:00").
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{}, nil
	}
	var fh, fm, th, tm int
	if n, err := fmt.Sscanf(s, "%d:%d-%d:%d", &fh, &fm, &th, &tm); err != nil || n != 4 ||
		fh < 0 || fh > 23 || th < 0 || th > 24 || fm < 0 || fm > 59 || tm < 0 || tm > 59 || (th == 24 && tm != 0) {
		return Window{}, fmt.Errorf("update window %q: want HH:MM-HH:MM, e.g. 02:00-05:00: %w", s, errdefs.ErrInvalid)
	}
	w := Window{from: time.Duration(fh)*time.Hour + time.Duration(fm)*time.Minute, to: time.Duration(th)*time.Hour + time.Duration(tm)*time.Minute, set: true}
	if w.from == w.to {
		return Window{}, fmt.Errorf("update window %q is empty: %w", s, errdefs.ErrInvalid)
	}
	return w, nil
}

// Open reports whether t falls in the window.
func (w Window) Open(t time.Time) bool {
	if !w.set {
		return true
	}
	y, mo, d := t.Date()
	since := t.Sub(time.Date(y, mo, d, 0, 0, 0, 0, t.Location()))
	if w.from < w.to {
		return since >= w.from && since < w.to
	}
	return since >= w.from || since < w.to
}

func (w Window) String() string {
	if !w.set {
		return ""
	}
	f := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	return f(w.from) + "-" + f(w.to)
}
