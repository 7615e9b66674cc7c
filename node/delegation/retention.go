package delegation

import (
	"context"
	"errors"
	"sort"
	"time"
)

// pruneInterval is how often ended tasks beyond [tasks] keep_tasks and
// keep_for are forgotten (and once at start).
const pruneInterval = 10 * time.Minute

// pruneLoop forgets old ended tasks now and then, until ctx ends.
func (d *Delegation) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		if n, err := d.prune(time.Now()); err != nil {
			d.log.Warn("forget old tasks", "err", err)
		} else if n > 0 {
			d.log.Info("forgot old tasks", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// prune forgets the ended tasks beyond the newest KeepTasks, and those that
// ended longer than KeepFor ago, on both sides: the record, the kept
// output and the pins of its roots (their blocks go at the next `ws gc`).
// A task not yet ended is never forgotten; a result its coordinator has not
// acknowledged is forgotten only once older than KeepFor (its coordinator
// is then taken to be gone for good).
func (d *Delegation) prune(now time.Time) (int, error) {
	cfg := d.cfg
	if cfg.KeepTasks <= 0 && cfg.KeepFor <= 0 {
		return 0, nil
	}
	type ended struct {
		id   string
		at   time.Time
		exec bool
		// undelivered: a result its coordinator never acknowledged, given
		// up on only by age (the coordinator is gone for good)
		undelivered bool
	}
	var all []ended
	tasks, err := d.rec.tasks()
	if err != nil {
		return 0, err
	}
	for _, t := range tasks {
		if t.State.final() {
			all = append(all, ended{id: t.ID, at: t.Updated})
		}
	}
	execs, err := d.rec.execs()
	if err != nil {
		return 0, err
	}
	for _, e := range execs {
		if e.ended() {
			all = append(all, ended{id: e.ID, at: e.Updated, exec: true, undelivered: e.State != stateDelivered})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.After(all[j].at) })
	var gone []ended
	kept := 0
	for _, e := range all {
		old := cfg.KeepFor > 0 && now.Sub(e.at) > cfg.KeepFor
		switch {
		case old:
			gone = append(gone, e)
		case e.undelivered:
			// kept, and not counted: only age gives up on a delivery
		case cfg.KeepTasks > 0 && kept >= cfg.KeepTasks:
			gone = append(gone, e)
		default:
			kept++
		}
	}
	if len(gone) == 0 {
		return 0, nil
	}
	d.recMu.Lock()
	defer d.recMu.Unlock()
	var ids []string
	var errs []error
	for _, e := range gone {
		prefix := taskRecordPrefix
		if e.exec {
			prefix = execRecordPrefix
		}
		if err := d.rec.delete(prefix, e.id); err != nil {
			errs = append(errs, err)
			continue
		}
		ids = append(ids, e.id)
		if err := d.unpinTask(e.id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.logs.Delete(ids...); err != nil {
		errs = append(errs, err)
	}
	return len(ids), errors.Join(errs...)
}
