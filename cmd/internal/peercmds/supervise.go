package peercmds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/update/supervise"
)

// wantsSupervisor reports whether join runs the peer under the update
// supervisor: when it trusts a release key, or when a release is installed
// (it must be the one started, even with the keys since removed).
func wantsSupervisor(cfg node.Config) bool {
	if len(cfg.Update.TrustedKeys) > 0 {
		return true
	}
	cur, err := cfg.Update.Releases.Current()
	return err != nil || cur != ""
}

// superviseJoin runs join as the update supervisor: the peer is its child,
// started from releases/current (or this binary), and a new version that
// is not healthy in time is rolled back.
func superviseJoin(cmd *cobra.Command, cfg node.Config, log *slog.Logger) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("join: find this binary: %w", err)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	s := supervise.New(supervise.Config{
		Releases:      cfg.Update.Releases,
		SystemBinary:  self,
		SystemVersion: cfg.Version,
		Args:          os.Args[1:],
		Env:           os.Environ(),
		HealthTimeout: cfg.Update.HealthTimeout,
		NotifySocket:  os.Getenv("NOTIFY_SOCKET"),
		Stdout:        cmd.OutOrStdout(),
		Stderr:        cmd.ErrOrStderr(),
	}, log.With("component", "supervise"))
	// Not cmd.Context(): it ends at the first signal, which the peer
	// must get as a drain, not as a kill.
	code, err := s.Run(context.Background(), sigs)
	if err != nil {
		return err
	}
	if code != 0 {
		return cli.ExitStatus(code)
	}
	return nil
}

// waitHealthy waits until a new version passes the whole health check:
// the store reads, the API answers, a mesh peer is connected when this
// peer knows any, and containerd answers where it is present. A signal
// gives up.
func waitHealthy(ctx context.Context, n *node.Node, sigs <-chan os.Signal, log *slog.Logger) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := n.UpdateHealthy(cctx)
		cancel()
		if err == nil {
			log.Info("new version is healthy")
			return nil
		}
		if last == nil || err.Error() != last.Error() {
			log.Info("new version not healthy yet", "err", err)
		}
		last = err
		select {
		case sig := <-sigs:
			return errors.New("stopped by " + sig.String() + " before the new version was healthy")
		case <-t.C:
		}
	}
}
