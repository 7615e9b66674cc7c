package p2p

import (
	"context"
	"log/slog"

	"github.com/libp2p/go-libp2p/gologshim"
)

// RouteLibp2pLogs sends go-libp2p's own logs at level min and above through
// log, so a peer's output has one format. It changes process-wide state, so
// only main calls it, before the first host is built.
func RouteLibp2pLogs(log *slog.Logger, min slog.Level) {
	gologshim.SetDefaultHandler(&libp2pHandler{next: log.With("component", "libp2p").Handler(), min: min})
}

// libp2pHandler filters go-libp2p's records by level and drops those of its
// "p2p-config" logger, which only repeats errors that libp2p.New returns to
// us and that we report with context.
type libp2pHandler struct {
	next    slog.Handler
	min     slog.Level
	discard bool
}

func (h *libp2pHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.discard && l >= h.min && h.next.Enabled(ctx, l)
}

func (h *libp2pHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.discard || r.Level < h.min {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *libp2pHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	for _, a := range attrs {
		if a.Key == "logger" && a.Value.String() == "p2p-config" {
			c.discard = true
		}
	}
	c.next = h.next.WithAttrs(attrs)
	return &c
}

func (h *libp2pHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
