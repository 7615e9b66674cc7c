package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// progressLine shows progress on one terminal line of stderr, and nothing
// when stderr is not a terminal (piped, in CI) or with --json.
type progressLine struct {
	w       io.Writer
	enabled bool
	width   int
	start   time.Time // of the first update with a byte count, for the rate
	from    uint64    // bytes at that update (a resumed get starts past 0)
}

func newProgress(g *Globals, w io.Writer) *progressLine {
	p := &progressLine{w: w}
	if f, ok := w.(*os.File); ok && !g.JSON {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.enabled = true
		}
	}
	return p
}

func (p *progressLine) update(ev *apiv1.Progress) {
	if !p.enabled {
		return
	}
	var s string
	switch {
	case ev.GetTotalBytes() > 0:
		// As rsync --info=progress2: how far, what share, how fast.
		s = fmt.Sprintf("%s: %s of %s (%d%%)", ev.GetPhase(), formatBytes(ev.GetBytes()), formatBytes(ev.GetTotalBytes()), 100*ev.GetBytes()/ev.GetTotalBytes())
		if p.start.IsZero() {
			p.start, p.from = time.Now(), ev.GetBytes()
		} else if el := time.Since(p.start).Seconds(); el > 0.5 && ev.GetBytes() > p.from {
			s += fmt.Sprintf(", %s/s", formatBytes(uint64(float64(ev.GetBytes()-p.from)/el)))
		}
	case ev.GetDone() == 0 && ev.GetBytes() == 0:
		s = ev.GetPhase() + "..."
	case ev.GetTotal() > 0:
		s = fmt.Sprintf("%s: %d/%d files, %s", ev.GetPhase(), ev.GetDone(), ev.GetTotal(), formatBytes(ev.GetBytes()))
	case ev.GetPhase() == "fetching" || ev.GetPhase() == "verifying":
		s = fmt.Sprintf("%s: %d blocks, %s", ev.GetPhase(), ev.GetDone(), formatBytes(ev.GetBytes()))
	default:
		s = fmt.Sprintf("%s: %d files, %s", ev.GetPhase(), ev.GetDone(), formatBytes(ev.GetBytes()))
	}
	pad := ""
	if len(s) < p.width {
		pad = strings.Repeat(" ", p.width-len(s))
	}
	p.width = len(s)
	fmt.Fprint(p.w, "\r"+s+pad)
}

// done clears the line.
func (p *progressLine) done() {
	if p.enabled && p.width > 0 {
		fmt.Fprint(p.w, "\r"+strings.Repeat(" ", p.width)+"\r")
	}
}
