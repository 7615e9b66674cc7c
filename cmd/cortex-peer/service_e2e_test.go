package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestSystemdNotify runs `join` as systemd runs a Type=notify service: with
// NOTIFY_SOCKET and WATCHDOG_USEC set. The peer must say READY=1 once it
// serves, feed the watchdog every half interval while healthy, and say
// STOPPING=1 on SIGTERM, then exit 0.
//
// Supervised (a peer that trusts a release key runs under the update
// supervisor), the same messages reach systemd through the supervisor.
func TestSystemdNotify(t *testing.T) {
	t.Run("direct", func(t *testing.T) { testSystemdNotify(t, false) })
	t.Run("supervised", func(t *testing.T) { testSystemdNotify(t, true) })
}

func testSystemdNotify(t *testing.T, supervised bool) {
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "peer")
	if r := run(t, bin, "init", "--data", data, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	if supervised {
		keys := filepath.Join(dir, "keys")
		if r := run(t, bin, "release", "keygen", "--out", keys); r.code != 0 {
			t.Fatalf("keygen: %s", r.stderr)
		}
		pub, err := os.ReadFile(filepath.Join(keys, "release.pub"))
		if err != nil {
			t.Fatal(err)
		}
		if err := testnet.EditConfig(filepath.Join(data, "config.toml"), map[string]string{
			`trusted_keys = []`: `trusted_keys = ["` + strings.TrimSpace(string(pub)) + `"]`,
		}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	messages := make(chan string, 64)
	go func() {
		defer close(messages)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			messages <- string(buf[:n])
		}
	}()
	cmd := exec.Command(bin, "join", "--data", data)
	cmd.Env = append(os.Environ(), "CORTEX_PEER_DATA=", "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	expect := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case m := <-messages:
				if strings.Contains(m, want) {
					return
				}
			case err := <-exited:
				t.Fatalf("the peer exited (%v) before saying %s: %s", err, want, stderr.String())
			case <-deadline:
				t.Fatalf("no %s within %v: %s", want, within, stderr.String())
			}
		}
	}
	expect("READY=1", 30*time.Second)
	// The API answers once READY is sent.
	if r := run(t, bin, "status", "--data", data); r.code != 0 {
		t.Fatalf("status after READY: %s", r.stderr)
	}
	r := run(t, bin, "update", "status", "--json", "--data", data)
	var us struct {
		Supervised bool `json:"supervised"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &us) != nil || us.Supervised != supervised {
		t.Fatalf("update status: want supervised %v: %s %s", supervised, r.stdout, r.stderr)
	}
	expect("WATCHDOG=1", 2*time.Second)
	expect("WATCHDOG=1", 2*time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("STOPPING=1", 10*time.Second)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v: %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the peer did not exit within 30 s of SIGTERM")
	}
}

// TestServiceInstall: the unit for a data dir, printed, written as a user
// unit and removed. systemd does not run here, so install stops after
// writing and says how to start the peer.
func TestServiceInstall(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "peer")
	if r := run(t, bin, "service", "install", "--print", "--data", data); r.code == 0 || !strings.Contains(r.stderr, "cortex-peer init") {
		t.Fatalf("install for a data dir with no peer: exit %d: %s", r.code, r.stderr)
	}
	if r := run(t, bin, "init", "--data", data, "--no-mdns"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	r := run(t, bin, "service", "install", "--print", "--data", data)
	if r.code != 0 {
		t.Fatalf("install --print: %s", r.stderr)
	}
	peerd := filepath.Join(filepath.Dir(bin), "cortex-peerd")
	for _, want := range []string{"Type=notify", "WatchdogSec=30", "Restart=on-failure", "TimeoutStopSec=660", "ExecStart=" + peerd + " join --data " + data, "WantedBy=multi-user.target"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("unit lacks %q:\n%s", want, r.stdout)
		}
	}
	xdg := filepath.Join(dir, "xdg")
	t.Setenv("XDG_CONFIG_HOME", xdg)
	unit := filepath.Join(xdg, "systemd", "user", "cortex-peer.service")
	r = run(t, bin, "service", "install", "--user", "--no-start", "--data", data)
	if r.code != 0 || !strings.Contains(r.stdout, unit) {
		t.Fatalf("install --user --no-start: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(unit)
	if err != nil || !strings.Contains(string(b), "WantedBy=default.target") {
		t.Fatalf("the user unit: %v\n%s", err, b)
	}
	// Where systemd runs, install and uninstall would touch the machine's
	// own service manager: the test stops at the written unit there.
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Log("systemd runs here: not starting or uninstalling through it")
		return
	}
	r = run(t, bin, "service", "install", "--user", "--data", data)
	if r.code == 0 || !strings.Contains(r.stderr, "systemd is not running") {
		t.Fatalf("install where systemd does not run: exit %d: %s", r.code, r.stderr)
	}
	if r := run(t, bin, "service", "uninstall", "--user"); r.code != 0 {
		t.Fatalf("uninstall: %s", r.stderr)
	}
	if _, err := os.Stat(unit); !os.IsNotExist(err) {
		t.Fatalf("the unit is still there after uninstall: %v", err)
	}
}
