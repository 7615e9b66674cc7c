package delegation

import (
	"context"
	"time"
)

// Bounds of a drain past its deadline: tasks killed at the deadline have
// DrainKillGrace to end, and results DrainDeliverGrace to be acknowledged.
// A drain therefore ends within deadline + DrainKillGrace +
// DrainDeliverGrace; results still unacknowledged then are delivered after
// the peer's next start (their records are durable).
const (
	DrainKillGrace    = 10 * time.Second
	DrainDeliverGrace = 30 * time.Second
	drainTick         = 200 * time.Millisecond
)

// DrainStatus is where a drain stands.
type DrainStatus struct {
	Running     int // tasks still running here
	Undelivered int // results of tasks run here not yet acknowledged
	// Completed ran to their end during the drain; Returned were killed at
	// the deadline and handed back.
	Completed, Returned int
	// LeftUndelivered: results the drain stopped waiting for.
	LeftUndelivered int
	Elapsed         time.Duration
	Done            bool
}

// Draining reports whether this peer takes no new tasks.
func (d *Delegation) Draining() bool { return d.draining.Load() }

// Eligible makes a drained peer take tasks again; it reports whether it
// was draining.
func (d *Delegation) Eligible() bool {
	was := d.draining.Swap(false)
	if was {
		d.log.Info("eligible again: taking new tasks")
	}
	return was
}

// Drain stops taking tasks, lets the tasks running here end until deadline,
// then kills those left and hands them back as returned, and waits for
// every result to be acknowledged by its coordinator (within the bounds
// above). progress is called every tick. The peer stays draining after
// Drain returns, until Eligible.
func (d *Delegation) Drain(ctx context.Context, deadline time.Duration, progress func(DrainStatus)) (DrainStatus, error) {
	start := time.Now()
	d.draining.Store(true)
	d.mu.Lock()
	atStart := len(d.running)
	d.mu.Unlock()
	d.log.Info("draining: no new tasks; the running ones may end", "running", atStart, "deadline", deadline)
	killAt := start.Add(deadline)
	giveUpAt := killAt.Add(DrainKillGrace + DrainDeliverGrace)
	returned := 0
	t := time.NewTicker(drainTick)
	defer t.Stop()
	for {
		d.mu.Lock()
		running := len(d.running)
		d.mu.Unlock()
		st := DrainStatus{
			Running: running, Undelivered: int(d.delivering.Load()),
			Returned: returned, Completed: max(atStart-running-returned, 0), Elapsed: time.Since(start),
		}
		now := time.Now()
		switch {
		case running == 0 && st.Undelivered == 0:
			st.Done = true
		case now.After(giveUpAt):
			st.Done, st.LeftUndelivered = true, st.Undelivered
			d.log.Warn("drain: results not acknowledged in time; they are delivered after the next start", "undelivered", st.Undelivered, "running", running)
		case running > 0 && now.After(killAt) && returned == 0:
			returned = d.returnRunning()
			d.log.Warn("drain deadline reached: stopping the tasks left and handing them back", "tasks", returned)
		}
		if progress != nil {
			progress(st)
		}
		if st.Done {
			d.log.Info("drained", "completed", st.Completed, "returned", st.Returned, "left_undelivered", st.LeftUndelivered, "took", st.Elapsed.Round(time.Millisecond))
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

// returnRunning cancels every task running here, marking them returned.
func (d *Delegation) returnRunning() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, cancel := range d.running {
		d.returning[id] = true
		cancel()
	}
	return len(d.running)
}

func (d *Delegation) isReturning(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.returning[id]
}
