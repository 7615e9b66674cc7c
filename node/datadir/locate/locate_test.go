package locate_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestResolveOrder(t *testing.T) {
	t.Setenv(locate.EnvVar, "/from/env")
	if got, _ := locate.Resolve("/from/flag"); got != "/from/flag" {
		t.Errorf("flag: got %s", got)
	}
	if got, _ := locate.Resolve(""); got != "/from/env" {
		t.Errorf("env: got %s", got)
	}
	t.Setenv(locate.EnvVar, "")
	t.Setenv("HOME", "/home/someone")
	if got, _ := locate.Resolve(""); got != "/home/someone/.cortex-peer" {
		t.Errorf("home: got %s", got)
	}
}

// FindAPI must agree with the full config loader, which the peer uses to
// decide where it listens.
func TestFindAPIAgreesWithTheConfig(t *testing.T) {
	root := t.TempDir()
	d, err := datadir.Init(root, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		_, cfg, err := datadir.Load(root)
		if err != nil {
			t.Fatal(err)
		}
		want, err := d.Token(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ep, err := locate.FindAPI(root)
		if err != nil {
			t.Fatal(err)
		}
		if ep.Socket != d.Path(cfg.API.Socket) || ep.Token != want {
			t.Fatalf("FindAPI = %+v, config says socket %s", ep, d.Path(cfg.API.Socket))
		}
	}
	check()

	// A config that moves the socket and the token.
	alt := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(alt, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(root, locate.ConfigFile)
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte(`socket = "api.sock"`), []byte(`socket = "run/x.sock"`), 1)
	b = bytes.Replace(b, []byte(`token_file = "api.token"`), []byte(`token_file = "`+alt+`"`), 1)
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	check()
	if ep, _ := locate.FindAPI(root); ep.Socket != filepath.Join(root, "run/x.sock") || ep.Token != "abc" {
		t.Fatalf("moved API: got %+v", ep)
	}

	if err := os.WriteFile(alt, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := locate.FindAPI(root); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("empty token: got %v, want ErrInvalid", err)
	}
	if err := os.WriteFile(cfgPath, []byte("[api\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := locate.FindAPI(root); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("broken config: got %v, want ErrInvalid", err)
	}
}

func TestFindAPINotInitialized(t *testing.T) {
	if _, err := locate.FindAPI(t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}
