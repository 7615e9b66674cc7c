package sdnotify

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// A peer that fails its health check stops feeding the watchdog, and
// feeds it again once healthy; without NOTIFY_SOCKET nothing is sent.
func TestWatchdogFollowsHealth(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sick atomic.Bool
	n := New(Config{Socket: sock, Watchdog: 100 * time.Millisecond, Health: func(context.Context) error {
		if sick.Load() {
			return errors.New("store closed")
		}
		return nil
	}}, slog.New(slog.DiscardHandler))
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx) }()
	read := func(within time.Duration) string {
		_ = conn.SetReadDeadline(time.Now().Add(within))
		buf := make([]byte, 256)
		k, err := conn.Read(buf)
		if err != nil {
			return ""
		}
		return string(buf[:k])
	}
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	if m := read(time.Second); m != "READY=1\nSTATUS=serving" {
		t.Fatalf("first message %q", m)
	}
	if m := read(time.Second); m != "WATCHDOG=1" {
		t.Fatalf("while healthy: %q", m)
	}
	sick.Store(true)
	_ = read(200 * time.Millisecond) // one may be in flight
	if m := read(300 * time.Millisecond); m != "" {
		t.Fatalf("while unhealthy: %q", m)
	}
	sick.Store(false)
	if m := read(time.Second); m != "WATCHDOG=1" {
		t.Fatalf("healthy again: %q", m)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	off := New(Config{}, slog.New(slog.DiscardHandler))
	if off.Enabled() || off.Ready() != nil || off.Stopping() != nil {
		t.Fatal("without a socket the notifier must do nothing")
	}
}
