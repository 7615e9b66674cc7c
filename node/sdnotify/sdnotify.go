// Package sdnotify tells systemd how the peer is doing, when systemd runs
// it as a Type=notify service: READY=1 once it serves, WATCHDOG=1 while it
// is healthy, STOPPING=1 when it stops. Outside systemd (no NOTIFY_SOCKET)
// every call does nothing.
//
// The protocol is one datagram a message on the unix socket systemd names
// in NOTIFY_SOCKET (sd_notify(3)); it needs no library.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Config says where to notify and how often to feed the watchdog.
type Config struct {
	// Socket is systemd's notify socket ("" : not run by systemd).
	Socket string
	// Watchdog is systemd's WatchdogSec (0: no watchdog). WATCHDOG=1 is
	// sent every half of it while Health passes.
	Watchdog time.Duration
	// Health reports whether the peer works; a peer that fails it stops
	// feeding the watchdog and systemd restarts it.
	Health func(ctx context.Context) error
}

// FromEnv reads systemd's variables: NOTIFY_SOCKET, and WATCHDOG_USEC when
// WATCHDOG_PID is unset or names this process.
func FromEnv(health func(context.Context) error) Config {
	cfg := Config{Socket: os.Getenv("NOTIFY_SOCKET"), Health: health}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return cfg
	}
	if us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		cfg.Watchdog = time.Duration(us) * time.Microsecond
	}
	return cfg
}

// Notifier sends the peer's state to systemd.
type Notifier struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	conn *net.UnixConn
	// unhealthy is set while Health fails, so that the failure is logged
	// once, not every tick.
	unhealthy bool
	closed    bool
}

// New returns a notifier; it dials nothing until the first message.
func New(cfg Config, log *slog.Logger) *Notifier {
	return &Notifier{cfg: cfg, log: log}
}

// Enabled reports whether systemd listens.
func (n *Notifier) Enabled() bool { return n.cfg.Socket != "" }

// Ready says the peer serves.
func (n *Notifier) Ready() error { return n.send("READY=1\nSTATUS=serving") }

// Stopping says the peer is stopping.
func (n *Notifier) Stopping() error { return n.send("STOPPING=1\nSTATUS=stopping") }

// Status sets the one-line status systemctl shows.
func (n *Notifier) Status(s string) error { return n.send("STATUS=" + s) }

// Serve feeds the watchdog until ctx ends.
func (n *Notifier) Serve(ctx context.Context) error {
	if !n.Enabled() || n.cfg.Watchdog <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(n.cfg.Watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := n.check(ctx); err != nil {
			continue
		}
		if err := n.send("WATCHDOG=1"); err != nil {
			n.log.Warn("cannot feed systemd's watchdog", "err", err)
		}
	}
}

// check runs Health with a deadline of half the watchdog interval.
func (n *Notifier) check(ctx context.Context) error {
	if n.cfg.Health == nil {
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, n.cfg.Watchdog/2)
	defer cancel()
	err := n.cfg.Health(hctx)
	n.mu.Lock()
	was := n.unhealthy
	n.unhealthy = err != nil
	n.mu.Unlock()
	switch {
	case err != nil && !was:
		n.log.Error("peer unhealthy; no longer feeding systemd's watchdog, which restarts the peer past WatchdogSec", "err", err)
	case err == nil && was:
		n.log.Info("peer healthy again; feeding systemd's watchdog")
	}
	return err
}

// send writes one datagram to systemd; without a socket it does nothing.
func (n *Notifier) send(msg string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	if n.conn == nil {
		name := n.cfg.Socket
		if name[0] == '@' { // an abstract socket
			name = "\x00" + name[1:]
		}
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("sdnotify: dial %s: %w", n.cfg.Socket, err)
		}
		n.conn = c
	}
	if _, err := n.conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sdnotify: write to %s: %w", n.cfg.Socket, err)
	}
	return nil
}

// Close closes the socket. Safe to call twice.
func (n *Notifier) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	if n.conn == nil {
		return nil
	}
	err := n.conn.Close()
	n.conn = nil
	return err
}
