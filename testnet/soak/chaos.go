package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// window is a time a peer was out: killed until it rejoined, or frozen
// until it was thawed.
type window struct {
	peer     *peer
	kind     string // "kill" or "freeze"
	from, to time.Time
	note     string
}

// chaos records what the soak did to the peers; the workers read it to
// pick peers that are up and to tell failures chaos explains from others.
type chaos struct {
	mu      sync.Mutex
	windows []window
	out     map[*peer]bool
}

func (c *chaos) begin(p *peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out == nil {
		c.out = map[*peer]bool{}
	}
	c.out[p] = true
}

func (c *chaos) end(w window) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.out, w.peer)
	c.windows = append(c.windows, w)
}

func (c *chaos) isOut(p *peer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out[p]
}

// near says whether a peer was out at some time between from-chaosGrace
// and to: a mesh needs a while after a rejoin to find its peers again.
func (c *chaos) near(from, to time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) > 0 {
		return true
	}
	for _, w := range c.windows {
		if !w.from.After(to) && !w.to.Add(chaosGrace).Before(from) {
			return true
		}
	}
	return false
}

// killed says whether p was killed between from and to.
func (c *chaos) killed(p *peer, from, to time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.windows {
		if w.peer == p && w.kind == "kill" && !w.from.After(to) && !w.to.Before(from) {
			return true
		}
	}
	return false
}

func (c *chaos) all() []window {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]window(nil), c.windows...)
}

// chaosLoop kills a random peer every killEvery and freezes another half
// a period later, until load ends. It returns with every peer running and
// thawed, so that the tasks still in flight can end.
func (s *soak) chaosLoop(load context.Context) {
	for k := 1; ; k++ {
		if !s.sleepUntil(load, s.start.Add(time.Duration(k)*s.cfg.killEvery-s.cfg.killEvery/2)) {
			return
		}
		s.freeze(s.pick())
		if !s.sleepUntil(load, s.start.Add(time.Duration(k)*s.cfg.killEvery)) {
			return
		}
		s.kill(s.pick())
	}
}

// sleepUntil waits until t, and says false if load ended first.
func (s *soak) sleepUntil(load context.Context, t time.Time) bool {
	select {
	case <-load.Done():
		return false
	case <-time.After(time.Until(t)):
		return true
	}
}

// kill sends SIGKILL to p's process, starts it again with its data dir
// and waits until the mesh sees it.
func (s *soak) kill(p *peer) {
	s.chaos.begin(p)
	w := window{peer: p, kind: "kill", from: time.Now()}
	defer func() { w.to = time.Now(); s.chaos.end(w) }()
	pid := p.pp.Pid()
	s.log.Info("kill -9", "peer", p.name, "pid", pid)
	if err := p.pp.Signal(syscall.SIGKILL); err != nil {
		s.finding("kill %s: %v", p.name, err)
		return
	}
	<-p.pp.Exited()
	// A context of its own: a soak ending must still leave the peer up.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), rejoinWithin)
	defer cancel()
	t0 := time.Now()
	if err := p.pp.Restart(ctx); err != nil {
		s.finding("restart of %s after kill -9: %v", p.name, err)
		return
	}
	up := time.Since(t0)
	if err := s.pn.WaitRejoined(ctx, p.pp); err != nil {
		s.finding("%s did not rejoin within %s of its restart: %v", p.name, rejoinWithin, err)
		return
	}
	w.note = fmt.Sprintf("API up in %.1fs, mesh in %.1fs", up.Seconds(), time.Since(t0).Seconds())
	s.log.Info("restarted", "peer", p.name, "pid", p.pp.Pid(), "took", w.note)
}

// freeze is the soak's partition: SIGSTOP stops p's process whole, so
// its connections stay open but nothing answers on them (heartbeats,
// streams, its API), as behind a link that drops every packet; SIGCONT
// heals it.
func (s *soak) freeze(p *peer) {
	s.chaos.begin(p)
	w := window{peer: p, kind: "freeze", from: time.Now()}
	defer func() { w.to = time.Now(); s.chaos.end(w) }()
	s.log.Info("freeze (SIGSTOP)", "peer", p.name, "for", s.cfg.freeze)
	if err := p.pp.Signal(syscall.SIGSTOP); err != nil {
		s.finding("SIGSTOP %s: %v", p.name, err)
		return
	}
	// The partition's length is the point, not a wait for an event; a
	// soak cut short thaws the peer at once.
	select {
	case <-time.After(s.cfg.freeze):
	case <-s.ctx.Done():
	}
	if err := p.pp.Signal(syscall.SIGCONT); err != nil {
		s.finding("SIGCONT %s: %v", p.name, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), rejoinWithin)
	defer cancel()
	t0 := time.Now()
	if err := s.pn.WaitRejoined(ctx, p.pp); err != nil {
		s.finding("%s not seen by the mesh within %s of SIGCONT: %v", p.name, rejoinWithin, err)
		return
	}
	w.note = fmt.Sprintf("every peer lists it %.1fs after SIGCONT", time.Since(t0).Seconds())
	s.log.Info("thawed", "peer", p.name, "took", w.note)
}

// sample is one reading of a peer process from /proc.
type sample struct {
	at      time.Time
	pid     int
	rss     int64 // bytes
	threads int
	fds     int
}

// sampleLoop reads every peer's RSS, threads and open files every
// sampleEvery until ctx ends, and once more at its end.
func (s *soak) sampleLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.sampleEvery)
	defer tick.Stop()
	for {
		s.sampleAll()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *soak) sampleAll() {
	now := time.Now()
	for _, p := range s.peers {
		pid := p.pp.Pid()
		if pid == 0 || !p.pp.Running() {
			continue
		}
		rss, threads, err := procStatus(pid)
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
		s.mu.Lock()
		s.samples[p] = append(s.samples[p], sample{at: now, pid: pid, rss: rss, threads: threads, fds: len(fds)})
		s.mu.Unlock()
	}
}

// procStatus reads VmRSS and Threads from /proc/PID/status.
func procStatus(pid int) (rss int64, threads int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "VmRSS:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss = kb << 10
		case len(f) >= 2 && f[0] == "Threads:":
			threads, _ = strconv.Atoi(f[1])
		}
	}
	return rss, threads, nil
}
