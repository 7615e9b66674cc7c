package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// serviceUnit is what `service install` writes: a Type=notify unit (the
// peer says READY=1 once it serves and feeds the watchdog while its store
// reads and its API answers), restarted on failure, logging to the journal
// (the peer logs to stderr).
type serviceUnit struct {
	Name    string // the unit's name, without .service
	PeerBin string // absolute path of cortex-peerd
	DataDir string // absolute path of the data dir
	User    bool   // a user unit (systemctl --user)
	// StopTimeout is TimeoutStopSec: SIGTERM drains the peer (bounded by
	// its drain deadline + drainBound) and then stops it; past this,
	// systemd kills what is left.
	StopTimeout time.Duration
}

// drainBound is what a drain may take past its deadline (10 s for the
// tasks it stops to end, 30 s for deliveries), and stopMargin what the
// peer then needs to close its store and sessions.
const (
	drainBound   = 40 * time.Second
	stopMargin   = 20 * time.Second
	defaultDrain = 10 * time.Minute
)

// drainDeadline reads [process] drain_deadline from the data dir's
// config.toml (the default when absent).
func drainDeadline(dataDir string) (time.Duration, error) {
	var fc struct {
		Process struct {
			DrainDeadline string `toml:"drain_deadline"`
		} `toml:"process"`
	}
	p := filepath.Join(dataDir, "config.toml")
	if _, err := toml.DecodeFile(p, &fc); err != nil {
		return 0, fmt.Errorf("read %s: %w", p, err)
	}
	if fc.Process.DrainDeadline == "" {
		return defaultDrain, nil
	}
	d, err := time.ParseDuration(fc.Process.DrainDeadline)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: process.drain_deadline %q: want a duration: %w", p, fc.Process.DrainDeadline, errdefs.ErrInvalid)
	}
	return d, nil
}

func (u serviceUnit) text() string {
	wanted := "multi-user.target"
	after := "network-online.target containerd.service"
	if u.User {
		wanted, after = "default.target", "network-online.target"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by 'cortex-peer service install'; 'cortex-peer service uninstall' removes it.
[Unit]
Description=cortex-peer mesh peer (%[1]s)
Documentation=https://github.com/cortex-peer/cortex-peer
Wants=network-online.target
After=%[2]s

[Service]
Type=notify
NotifyAccess=main
ExecStart=%[3]s join --data %[4]s
Environment=CORTEX_PEER_DATA=%[4]s
Restart=on-failure
RestartSec=2
# The peer sends WATCHDOG=1 every 15 s while its store reads and its API
# answers; a peer that hangs is restarted.
WatchdogSec=30
# SIGTERM drains the peer (no new tasks; running ones may end within
# [process] drain_deadline, then are handed back; results delivered), then
# it stops its children (Chromium, language servers, tasks) itself.
# TimeoutStopSec is the drain's bound plus a margin; past it systemd kills
# what is left. Re-run 'service install' after changing drain_deadline.
KillMode=mixed
TimeoutStopSec=%[5]d
LimitNOFILE=65536

[Install]
WantedBy=%[6]s
`, u.DataDir, after, systemdQuote(u.PeerBin), systemdQuote(u.DataDir), int(u.StopTimeout.Seconds()), wanted)
	return b.String()
}

// systemdQuote quotes a path for a unit's command line when it needs it.
func systemdQuote(s string) string {
	if !strings.ContainsAny(s, " \t\"'\\%$;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%", "$", "$$")
	return `"` + r.Replace(s) + `"`
}

// unitPath is where the unit goes: /etc/systemd/system, or the user's
// systemd directory with --user.
func (u serviceUnit) unitPath() (string, error) {
	if !u.User {
		return filepath.Join("/etc/systemd/system", u.Name+".service"), nil
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the user's systemd directory: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "systemd", "user", u.Name+".service"), nil
}

// systemctl runs systemctl (--user with a user unit).
func (u serviceUnit) systemctl(args ...string) error {
	if u.User {
		args = append([]string{"--user"}, args...)
	}
	var out bytes.Buffer
	c := exec.Command("systemctl", args...)
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// systemdRunning reports whether systemd is the init system here
// (sd_booted(3)).
func systemdRunning() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

func newServiceCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Run the peer as a systemd service: install, uninstall",
	}
	cmd.AddCommand(newServiceInstallCmd(g), newServiceUninstallCmd(g))
	return cmd
}

// serviceFor builds the unit of the data dir named by --data.
func serviceFor(g *Globals, name string, user bool) (serviceUnit, error) {
	root, err := locate.Resolve(g.Data)
	if err != nil {
		return serviceUnit{}, err
	}
	if root, err = filepath.Abs(root); err != nil {
		return serviceUnit{}, err
	}
	if _, err := os.Stat(filepath.Join(root, "config.toml")); err != nil {
		return serviceUnit{}, fmt.Errorf("no peer in %s (run 'cortex-peer init --data %s' first): %w", root, root, errdefs.ErrNotFound)
	}
	bin, err := findPeerBinary()
	if err != nil {
		return serviceUnit{}, err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return serviceUnit{}, err
	}
	if name == "" || strings.ContainsAny(name, "/ \t@") {
		return serviceUnit{}, Usage(fmt.Errorf("--name %q: want a unit name without '/', '@' or spaces", name))
	}
	drain, err := drainDeadline(root)
	if err != nil {
		return serviceUnit{}, err
	}
	return serviceUnit{Name: name, PeerBin: bin, DataDir: root, User: user, StopTimeout: drain + drainBound + stopMargin}, nil
}

func newServiceInstallCmd(g *Globals) *cobra.Command {
	var (
		user, print, noStart bool
		name                 string
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install the peer of --data as a systemd service, then enable and start it",
		Long: `install writes a systemd unit that runs 'cortex-peerd join' for the data
directory of --data, then runs 'systemctl daemon-reload' and
'systemctl enable --now'. The unit is Type=notify: the peer tells systemd when it
serves and feeds a 30 s watchdog while its store reads and its API answers, so a
peer that hangs is restarted; it restarts on failure and logs to the journal.

Without --user the unit goes to /etc/systemd/system (run as root: tasks need
containerd); with --user, to ~/.config/systemd/user (systemctl --user).
--print shows the unit and changes nothing; --no-start writes it without
enabling or starting it.`,
		Example: `  sudo cortex-peer service install --data /var/lib/cortex-peer
  cortex-peer service install --user
  cortex-peer service install --print
  journalctl -u cortex-peer -f`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := serviceFor(g, name, user)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if print {
				_, err := fmt.Fprint(out, u.text())
				return err
			}
			path, err := u.unitPath()
			if err != nil {
				return err
			}
			if err := writeFileAtomic(path, []byte(u.text()), 0o644); err != nil {
				if errors.Is(err, fs.ErrPermission) {
					return fmt.Errorf("%w (a system unit needs root: run with sudo, or pass --user)", err)
				}
				return err
			}
			fmt.Fprintf(out, "wrote %s\n", path)
			if noStart {
				fmt.Fprintf(out, "start it with: systemctl %senable --now %s\n", userFlag(user), u.Name)
				return nil
			}
			if !systemdRunning() {
				return fmt.Errorf("systemd is not running on this machine (no /run/systemd/system): the unit is written but not started; run the peer with 'cortex-peer join --data %s': %w", u.DataDir, errdefs.ErrUnavailable)
			}
			if err := u.systemctl("daemon-reload"); err != nil {
				return err
			}
			if err := u.systemctl("enable", "--now", u.Name); err != nil {
				return err
			}
			fmt.Fprintf(out, "enabled and started %s; logs: journalctl %s-u %s -f\n", u.Name, userFlag(user), u.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&user, "user", false, "install a user unit (systemctl --user) instead of a system one")
	f.BoolVar(&print, "print", false, "print the unit and change nothing")
	f.BoolVar(&noStart, "no-start", false, "write the unit without enabling or starting it")
	f.StringVar(&name, "name", "cortex-peer", "the unit's name")
	return cmd
}

func newServiceUninstallCmd(g *Globals) *cobra.Command {
	var (
		user bool
		name string
	)
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and disable the peer's systemd service and remove its unit",
		Long: `uninstall runs 'systemctl disable --now' on the unit 'service install' wrote,
removes the unit file and reloads systemd. The data directory is kept.`,
		Example: `  sudo cortex-peer service uninstall
  cortex-peer service uninstall --user`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u := serviceUnit{Name: name, User: user}
			path, err := u.unitPath()
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("no unit %s: %w", path, errdefs.ErrNotFound)
			}
			if systemdRunning() {
				if err := u.systemctl("disable", "--now", u.Name); err != nil {
					return err
				}
			}
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove %s: %w", path, err)
			}
			if systemdRunning() {
				if err := u.systemctl("daemon-reload"); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&user, "user", false, "the unit is a user unit (systemctl --user)")
	cmd.Flags().StringVar(&name, "name", "cortex-peer", "the unit's name")
	return cmd
}

func userFlag(user bool) string {
	if user {
		return "--user "
	}
	return ""
}

// writeFileAtomic writes data beside path and renames it into place, so a
// unit is never seen half-written.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a rename, nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
