// Package supervise runs the peer as a child of a small, stable parent so
// that a new version can be tried and rolled back without a human: the
// parent starts releases/current (or the system's binary), gives a new
// version health_timeout to say READY and stay up, and when it exits,
// hangs or crashes within that time switches back to the previous version,
// marks the new one bad and starts the previous one.
//
// The parent keeps the pid the service manager (or the testnet) knows; it
// forwards SIGINT and SIGTERM to the peer and relays the peer's systemd
// notifications (READY, WATCHDOG, STATUS) to systemd when systemd runs it.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	"github.com/cortex-peer/cortex-peer/node/update/releasedir"
)

// Environment the parent gives the peer it starts.
const (
	// EnvSupervised tells the peer it runs under the parent: it serves
	// itself rather than supervising.
	EnvSupervised = "CORTEX_SUPERVISED"
	// EnvTrial tells a peer it runs on probation: it says READY only once
	// it passes the full health check.
	EnvTrial = "CORTEX_UPDATE_TRIAL"
	// ExitRestart is the peer's exit status asking the parent to start
	// releases/current again (after an install or a rollback).
	ExitRestart = 75
)

// Config is what the parent runs.
type Config struct {
	Releases releasedir.Dir
	// SystemBinary is started when there is no current release, or when
	// it is newer than the current release (SystemVersion, the system's
	// package was upgraded past it).
	SystemBinary  string
	SystemVersion string
	// Args are the peer's arguments (without argv[0]).
	Args []string
	// Env is the peer's environment (os.Environ()).
	Env []string
	// HealthTimeout is a new version's probation.
	HealthTimeout time.Duration
	// KillGrace is how long a peer that must stop gets after SIGTERM.
	KillGrace time.Duration
	// NotifySocket is systemd's NOTIFY_SOCKET ("" : not run by systemd).
	NotifySocket string
	Stdout       io.Writer
	Stderr       io.Writer
}

// Supervisor runs the peer and rolls bad versions back.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	relay      *net.UnixConn // to systemd; nil outside it
	readySent  bool
	notifyName string
	notify     *net.UnixConn
}

// New prepares a supervisor; Run starts the peer.
func New(cfg Config, log *slog.Logger) *Supervisor {
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 5 * time.Second
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	return &Supervisor{cfg: cfg, log: log}
}

// exit is how one run of the peer ended.
type exit struct {
	code   int
	signal string
	err    error
}

func (e exit) String() string {
	if e.signal != "" {
		return "killed by " + e.signal
	}
	return "exited with status " + strconv.Itoa(e.code)
}

// Run starts the peer and starts it again after each update or rollback,
// until it stops for good; it returns the peer's last exit status. Signals
// received are forwarded to the peer; ctx ending kills it.
func (s *Supervisor) Run(ctx context.Context, signals <-chan os.Signal) (int, error) {
	if err := s.listenNotify(); err != nil {
		return 1, err
	}
	defer s.notify.Close()
	if s.cfg.NotifySocket != "" {
		if c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.cfg.NotifySocket, Net: "unixgram"}); err == nil {
			s.relay = c
			defer c.Close()
		} else {
			s.log.Warn("cannot reach systemd's notify socket", "err", err)
		}
	}
	notes := make(chan string, 16)
	go s.readNotify(notes)
	stopping := false
	restarts := map[string]int{} // restarts asked by a version on probation
	for {
		version, bin, trial, err := s.choose()
		if err != nil {
			return 1, err
		}
		res, err := s.runOnce(ctx, version, bin, trial, signals, notes, &stopping)
		if err != nil {
			return 1, err
		}
		restart := res.exit.code == ExitRestart && res.exit.signal == ""
		switch {
		case stopping:
			return res.code, nil
		case res.rolledBack:
			continue
		case trial && !res.committed && (!restart || !res.ready || restarts[version] >= maxTrialRestarts):
			s.rollback(fmt.Sprintf("%s on probation", res.exit))
			continue
		case restart:
			if trial && !res.committed {
				restarts[version]++
			}
			s.log.Info("peer asked to restart; starting the current release", "version", nameOf(version))
			continue
		case res.exit.code == 0 && res.exit.signal == "":
			return 0, nil
		default:
			return exitCode(res.exit), nil
		}
	}
}

// maxTrialRestarts bounds the restarts a version on probation may ask for
// before it counts as a crash loop.
const maxTrialRestarts = 3

// choose reads which version to start: current, on trial when the state
// says so. A trial whose switch was cut (current is not the trial) is
// dropped; a current version that is missing or bad is rolled back first.
func (s *Supervisor) choose() (version, bin string, trial bool, err error) {
	d := s.cfg.Releases
	for range 3 {
		version, err = d.Current()
		if err != nil {
			return "", "", false, err
		}
		st, err := d.State()
		if err != nil {
			s.log.Warn("release state unreadable; starting over", "err", err)
		}
		if version == "" {
			if st.Trial != "" {
				_ = d.Update(func(s *releasedir.State) { s.Trial = "" })
			}
			return "", s.cfg.SystemBinary, false, nil
		}
		if _, bad := st.Bad[version]; bad {
			s.rollback("current release is marked bad")
			continue
		}
		if releasekey.ValidVersion(s.cfg.SystemVersion) && releasekey.CompareVersions(s.cfg.SystemVersion, version) > 0 {
			s.log.Info("the installed binary is newer than the current release; starting it", "installed", s.cfg.SystemVersion, "current", version)
			return "", s.cfg.SystemBinary, false, nil
		}
		bin = d.BinaryPath(version)
		if _, err := os.Stat(bin); err != nil {
			s.rollback("current release's binary is missing: " + err.Error())
			continue
		}
		if releasekey.CompareVersions(version, st.Highest) > 0 || st.Highest == "" {
			// Installed and started: nothing at or below it is installed
			// again, rolled back or not.
			_ = d.Update(func(s *releasedir.State) { s.Highest = version })
		}
		if st.Trial != "" && st.Trial != version {
			s.log.Warn("an install was cut before it switched; starting the version that is current", "cut", st.Trial, "current", version)
			_ = d.Update(func(s *releasedir.State) { s.Trial = "" })
		}
		return version, bin, st.Trial == version, nil
	}
	return "", "", false, errors.New("supervise: the releases directory keeps naming a bad current version")
}

// rollback switches to the previous version and says why; a failure to
// switch is logged and the system's binary is started instead.
func (s *Supervisor) rollback(reason string) {
	from, to, err := s.cfg.Releases.Rollback(reason)
	if err != nil {
		s.log.Error("rollback failed; starting the system's binary", "err", err)
		_ = s.cfg.Releases.Update(func(st *releasedir.State) { st.Trial = "" })
		return
	}
	s.log.Warn("rolled back", "from", from, "to", nameOf(to), "reason", reason)
}

type runResult struct {
	exit       exit
	ready      bool
	code       int // what Run returns when stopping
	committed  bool
	rolledBack bool
}

// runOnce starts one peer and waits for it.
func (s *Supervisor) runOnce(ctx context.Context, version, bin string, trial bool, signals <-chan os.Signal, notes <-chan string, stopping *bool) (runResult, error) {
	cmd := exec.Command(bin, s.cfg.Args...)
	cmd.Args[0] = "cortex-peerd"
	cmd.Stdout, cmd.Stderr = s.cfg.Stdout, s.cfg.Stderr
	cmd.Env = s.childEnv(trial)
	// Its own process group, so that a terminal's ^C reaches only the
	// parent, which forwards it once; and it dies with the parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		if trial {
			s.rollback("cannot start: " + err.Error())
			return runResult{rolledBack: true}, nil
		}
		return runResult{}, fmt.Errorf("start peer %s: %w", bin, err)
	}
	s.log.Info("peer started", "version", nameOf(version), "pid", cmd.Process.Pid, "trial", trial)
	exited := make(chan exit, 1)
	go func() { exited <- waitExit(cmd) }()

	var probation <-chan time.Time
	if trial {
		t := time.NewTimer(s.cfg.HealthTimeout)
		defer t.Stop()
		probation = t.C
	}
	ready, committed := false, false
	for {
		select {
		case sig := <-signals:
			*stopping = true
			_ = cmd.Process.Signal(sig)
		case <-ctx.Done():
			*stopping = true
			_ = cmd.Process.Kill()
		case note := <-notes:
			if hasField(note, "READY=1") {
				ready = true
				s.log.Info("peer is ready", "version", nameOf(version), "after", time.Since(started).Round(time.Millisecond))
			}
			s.relayNote(note, *stopping)
		case <-probation:
			probation = nil
			if *stopping {
				continue
			}
			if !ready {
				s.log.Warn("new version not healthy in time; stopping it", "version", version, "health_timeout", s.cfg.HealthTimeout)
				s.stop(cmd, exited)
				s.rollback(fmt.Sprintf("not healthy within %s", s.cfg.HealthTimeout))
				return runResult{rolledBack: true}, nil
			}
			committed = true
			_ = s.cfg.Releases.Update(func(st *releasedir.State) {
				if st.Trial == version {
					st.Trial = ""
				}
			})
			s.log.Info("new version is healthy; keeping it", "version", version)
		case e := <-exited:
			if !trial {
				committed = true
			}
			return runResult{exit: e, code: exitCode(e), committed: committed, ready: ready}, nil
		}
	}
}

// stop sends the peer SIGTERM and waits for it to exit, killing its
// process group after KillGrace.
func (s *Supervisor) stop(cmd *exec.Cmd, exited <-chan exit) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(s.cfg.KillGrace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (s *Supervisor) childEnv(trial bool) []string {
	env := make([]string, 0, len(s.cfg.Env)+3)
	for _, kv := range s.cfg.Env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case EnvSupervised, EnvTrial, "NOTIFY_SOCKET", "WATCHDOG_PID":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, EnvSupervised+"=1", "NOTIFY_SOCKET="+s.notifyName)
	if trial {
		env = append(env, EnvTrial+"=1")
	}
	return env
}

// listenNotify opens the socket the peer sends its systemd notifications
// to: an abstract unix socket, so nothing is left on disk.
func (s *Supervisor) listenNotify() error {
	s.notifyName = fmt.Sprintf("@cortex-supervise-%d-%d", os.Getpid(), time.Now().UnixNano())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.notifyName, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("supervise: notify socket: %w", err)
	}
	s.notify = c
	return nil
}

func (s *Supervisor) readNotify(out chan<- string) {
	buf := make([]byte, 4096)
	for {
		n, _, err := s.notify.ReadFromUnix(buf)
		if err != nil {
			return
		}
		select {
		case out <- string(buf[:n]):
		default: // the loop is busy: a WATCHDOG or STATUS can be dropped
		}
	}
}

// relayNote passes a notification on to systemd: READY only once, since
// the service is ready from its first start on, and STOPPING only when the
// service stops.
func (s *Supervisor) relayNote(note string, stopping bool) {
	if s.relay == nil {
		return
	}
	if hasField(note, "READY=1") {
		if s.readySent {
			note = strings.ReplaceAll(note, "READY=1", "STATUS=serving")
		}
		s.readySent = true
	}
	if hasField(note, "STOPPING=1") && !stopping {
		return // a restart into another version, not a stop
	}
	_, _ = s.relay.Write([]byte(note))
}

func hasField(note, field string) bool {
	for _, l := range strings.Split(note, "\n") {
		if l == field {
			return true
		}
	}
	return false
}

func waitExit(cmd *exec.Cmd) exit {
	err := cmd.Wait()
	st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && st.Signaled():
		return exit{signal: st.Signal().String(), err: err}
	case cmd.ProcessState != nil:
		return exit{code: cmd.ProcessState.ExitCode(), err: err}
	}
	return exit{code: 1, err: err}
}

func exitCode(e exit) int {
	if e.signal != "" {
		return 1
	}
	return e.code
}

func nameOf(version string) string {
	if version == "" {
		return "system binary"
	}
	return version
}
