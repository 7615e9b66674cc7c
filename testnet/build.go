package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Build builds cortex-peer and, beside it, cortex-peerd (which carries out
// the verbs that run a peer) into dir, as `make build` does, and returns the
// path of cortex-peer. It must run inside the module.
func Build(dir string) (string, error) { return BuildVersion(dir, "") }

// BuildVersion is Build with the version the binaries report set to
// version ("" : the default), as a release of it would be built.
func BuildVersion(dir, version string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("build cortex-peer: find the module: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if version != "" {
		args = append(args, "-ldflags", "-X github.com/cortex-peer/cortex-peer/node/buildinfo.Version="+version)
	}
	cmd := exec.Command("go", append(args, "./cmd/cortex-peer", "./cmd/cortex-peerd")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build does
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build cortex-peer: %w\n%s", err, out)
	}
	return filepath.Join(dir, "cortex-peer"), nil
}

// BuildBinary builds the binaries once per test process, into a temporary
// directory removed when the process ends, and returns the path of
// cortex-peer. Tests that drive the real binary use it.
func BuildBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cortex-peer-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath, buildErr = Build(dir)
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return buildPath
}

// RemoveBinary deletes what BuildBinary built; call it from TestMain.
func RemoveBinary() {
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
}
