package node

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Restart backoff of a failed service.
const (
	restartBackoffMin = 100 * time.Millisecond
	restartBackoffMax = 30 * time.Second
	// healthyRun is how long a service must run before its backoff resets.
	healthyRun = time.Minute
)

// supervisor runs long-lived services as Serve(ctx) error and restarts any
// that fails, with backoff, until its context ends. Stop waits for all.
type supervisor struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	wg     sync.WaitGroup
}

func newSupervisor(log *slog.Logger) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	return &supervisor{ctx: ctx, cancel: cancel, log: log}
}

// Go runs serve under supervision. A nil return while the supervisor runs
// counts as a failure too: services return only when told to.
func (s *supervisor) Go(name string, serve func(context.Context) error) {
	s.wg.Go(func() {
		backoff := restartBackoffMin
		for {
			start := time.Now()
			err := serve(s.ctx)
			if s.ctx.Err() != nil {
				return
			}
			if time.Since(start) > healthyRun {
				backoff = restartBackoffMin
			}
			s.log.Error("service failed; restarting", "service", name, "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, restartBackoffMax)
		}
	})
}

// Stop cancels every service and waits for them. Safe to call more than once.
func (s *supervisor) Stop() {
	s.cancel()
	s.wg.Wait()
}
