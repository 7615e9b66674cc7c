package runtime

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func u32(v uint32) *uint32 { return &v }

func TestPolicyApplyDefaults(t *testing.T) {
	p := DefaultPolicy()
	got, err := p.Apply(Spec{ID: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Image != p.DefaultImage || got.Limits != p.DefaultLimits || got.Timeout != p.DefaultTimeout ||
		*got.UID != 65534 || *got.GID != 65534 || got.Network != NetworkNone || got.Isolation != IsolationRunc || got.Workdir != "/" {
		t.Errorf("defaults not filled: %+v", got)
	}
	got, err = p.Apply(Spec{ID: "t2", WorkspaceDir: "/var/lib/ws/t2", UID: u32(1000), Limits: Limits{CPUs: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Workdir != WorkspacePath || *got.UID != 1000 || *got.GID != 1000 || got.Limits.CPUs != 0.5 || got.Limits.MemoryBytes != p.DefaultLimits.MemoryBytes {
		t.Errorf("got %+v", got)
	}

	// The result shares nothing with the caller's spec.
	in := Spec{ID: "t3", Command: []string{"a"}, Env: []string{"A=1"}, Labels: map[string]string{"k": "v"}}
	got, err = p.Apply(in)
	if err != nil {
		t.Fatal(err)
	}
	in.Command[0], in.Env[0], in.Labels["k"] = "x", "X=1", "x"
	if got.Command[0] != "a" || got.Env[0] != "A=1" || got.Labels["k"] != "v" {
		t.Errorf("Apply's result aliases the input: %+v", got)
	}
}

func TestPolicyApply(t *testing.T) {
	base := func() Spec { return Spec{ID: "task-1", Command: []string{"true"}} }
	permissive := DefaultPolicy()
	permissive.AllowRoot, permissive.AllowHostNet = true, true
	noGVisor := DefaultPolicy()
	noGVisor.AllowGVisor = false

	tests := []struct {
		name   string
		policy *Policy // nil: DefaultPolicy
		edit   func(*Spec)
		kind   error  // nil: accepted
		msg    string // part of the error message (the field, the cap)
	}{
		{"ok", nil, func(*Spec) {}, nil, ""},
		{"empty id", nil, func(s *Spec) { s.ID = "" }, errdefs.ErrInvalid, "id is empty"},
		{"id with slash", nil, func(s *Spec) { s.ID = "../x" }, errdefs.ErrInvalid, "id"},
		{"id too long", nil, func(s *Spec) { s.ID = strings.Repeat("a", 77) }, errdefs.ErrInvalid, "over 76"},
		{"image with space", nil, func(s *Spec) { s.Image = "a b" }, errdefs.ErrInvalid, "image"},
		{"empty program", nil, func(s *Spec) { s.Command = []string{""} }, errdefs.ErrInvalid, "command[0]"},
		{"NUL in arg", nil, func(s *Spec) { s.Command = []string{"echo", "a\x00b"} }, errdefs.ErrInvalid, "command[1]"},
		{"empty arg is fine", nil, func(s *Spec) { s.Command = []string{"echo", ""} }, nil, ""},
		{"env without =", nil, func(s *Spec) { s.Env = []string{"FOO"} }, errdefs.ErrInvalid, "env[0]"},
		{"env empty name", nil, func(s *Spec) { s.Env = []string{"A=1", "=x"} }, errdefs.ErrInvalid, "env[1]"},
		{"env empty value is fine", nil, func(s *Spec) { s.Env = []string{"A="} }, nil, ""},
		{"relative workdir", nil, func(s *Spec) { s.Workdir = "src" }, errdefs.ErrInvalid, "relative"},
		{"unclean workdir", nil, func(s *Spec) { s.Workdir = "/a/../b" }, errdefs.ErrInvalid, "not clean"},
		{"trailing slash workdir", nil, func(s *Spec) { s.Workdir = "/a/" }, errdefs.ErrInvalid, "not clean"},
		{"proc fd workdir", nil, func(s *Spec) { s.Workdir = "/proc/self/fd/8" }, errdefs.ErrInvalid, "/proc"},
		{"proc workdir", nil, func(s *Spec) { s.Workdir = "/proc" }, errdefs.ErrInvalid, "/proc"},
		{"procfoo workdir is fine", nil, func(s *Spec) { s.Workdir = "/procfoo" }, nil, ""},
		{"relative workspace", nil, func(s *Spec) { s.WorkspaceDir = "ws" }, errdefs.ErrInvalid, "workspace_dir"},
		{"negative memory", nil, func(s *Spec) { s.Limits.MemoryBytes = -1 }, errdefs.ErrInvalid, "limits.memory_bytes -1 is negative"},
		{"tiny memory", nil, func(s *Spec) { s.Limits.MemoryBytes = 1024 }, errdefs.ErrInvalid, "limits.memory_bytes 1 KiB is under the minimum 6 MiB"},
		{"memory over cap", nil, func(s *Spec) { s.Limits.MemoryBytes = 9 << 30 }, errdefs.ErrPermissionDenied, "limits.memory_bytes 9 GiB is over this peer's cap 8 GiB"},
		{"absurd memory", nil, func(s *Spec) { s.Limits.MemoryBytes = math.MaxInt64 }, errdefs.ErrPermissionDenied, "memory_bytes"},
		{"memory at cap", nil, func(s *Spec) { s.Limits.MemoryBytes = 8 << 30 }, nil, ""},
		{"negative cpus", nil, func(s *Spec) { s.Limits.CPUs = -1 }, errdefs.ErrInvalid, "limits.cpus -1 is negative"},
		{"near-zero cpus", nil, func(s *Spec) { s.Limits.CPUs = 1e-9 }, errdefs.ErrInvalid, "limits.cpus"},
		{"NaN cpus", nil, func(s *Spec) { s.Limits.CPUs = math.NaN() }, errdefs.ErrInvalid, "not a number"},
		{"infinite cpus", nil, func(s *Spec) { s.Limits.CPUs = math.Inf(1) }, errdefs.ErrInvalid, "not a number"},
		{"cpus over cap", nil, func(s *Spec) { s.Limits.CPUs = 4.5 }, errdefs.ErrPermissionDenied, "limits.cpus 4.5 is over this peer's cap 4"},
		{"negative pids", nil, func(s *Spec) { s.Limits.Pids = -1 }, errdefs.ErrInvalid, "limits.pids"},
		{"pids over cap", nil, func(s *Spec) { s.Limits.Pids = 1 << 40 }, errdefs.ErrPermissionDenied, "limits.pids"},
		{"negative tmp", nil, func(s *Spec) { s.Limits.TmpBytes = -4096 }, errdefs.ErrInvalid, "limits.tmp_bytes"},
		{"tiny tmp", nil, func(s *Spec) { s.Limits.TmpBytes = 1 }, errdefs.ErrInvalid, "limits.tmp_bytes 1 byte is under the minimum 4 KiB"},
		{"tmp over cap", nil, func(s *Spec) { s.Limits.TmpBytes = 2 << 30 }, errdefs.ErrPermissionDenied, "limits.tmp_bytes"},
		{"tiny open files", nil, func(s *Spec) { s.Limits.OpenFiles = 1 }, errdefs.ErrInvalid, "limits.open_files"},
		{"absurd open files", nil, func(s *Spec) { s.Limits.OpenFiles = math.MaxUint64 }, errdefs.ErrPermissionDenied, "limits.open_files"},
		{"negative timeout", nil, func(s *Spec) { s.Timeout = -time.Second }, errdefs.ErrInvalid, "timeout"},
		{"timeout over cap", nil, func(s *Spec) { s.Timeout = 25 * time.Hour }, errdefs.ErrPermissionDenied, "timeout 25h0m0s is over this peer's cap 24h0m0s"},
		{"unknown network", nil, func(s *Spec) { s.Network = "bridge" }, errdefs.ErrInvalid, `network "bridge" is unknown`},
		{"host network denied", nil, func(s *Spec) { s.Network = NetworkHost }, errdefs.ErrPermissionDenied, "network"},
		{"host network allowed", &permissive, func(s *Spec) { s.Network = NetworkHost }, nil, ""},
		{"unknown isolation", nil, func(s *Spec) { s.Isolation = "kata" }, errdefs.ErrInvalid, `isolation "kata" is unknown`},
		{"gvisor allowed", nil, func(s *Spec) { s.Isolation = IsolationGVisor }, nil, ""},
		{"gvisor denied", &noGVisor, func(s *Spec) { s.Isolation = IsolationGVisor }, errdefs.ErrPermissionDenied, "isolation"},
		{"root denied", nil, func(s *Spec) { s.UID = u32(0) }, errdefs.ErrPermissionDenied, "root"},
		{"root group denied", nil, func(s *Spec) { s.UID, s.GID = u32(1000), u32(0) }, errdefs.ErrPermissionDenied, "root"},
		{"root allowed", &permissive, func(s *Spec) { s.UID = u32(0) }, nil, ""},
		{"uid -1", nil, func(s *Spec) { s.UID = u32(math.MaxUint32) }, errdefs.ErrInvalid, "uid"},
		{"our label", nil, func(s *Spec) { s.Labels = map[string]string{labelOwner: "someone-else"} }, errdefs.ErrInvalid, "reserved prefix"},
		{"containerd gc label", nil, func(s *Spec) { s.Labels = map[string]string{"containerd.io/gc.ref.content": "sha256:x"} }, errdefs.ErrInvalid, "reserved prefix"},
		{"empty label key", nil, func(s *Spec) { s.Labels = map[string]string{"": "x"} }, errdefs.ErrInvalid, "empty key"},
		{"huge label", nil, func(s *Spec) { s.Labels = map[string]string{"k": strings.Repeat("v", 5000)} }, errdefs.ErrInvalid, "label"},
		{"plain label", nil, func(s *Spec) { s.Labels = map[string]string{"job": "build"} }, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			if tc.policy != nil {
				p = *tc.policy
			}
			spec := base()
			tc.edit(&spec)
			_, err := p.Apply(spec)
			if tc.kind == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("error %v, want kind %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

// Every problem of a spec is reported at once.
func TestPolicyApplyReportsAll(t *testing.T) {
	_, err := DefaultPolicy().Apply(Spec{ID: "x", Workdir: "rel", Network: "bad", Limits: Limits{Pids: -1}})
	for _, want := range []string{"workdir", "network", "limits.pids"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	for name, edit := range map[string]func(*Policy){
		"no image":            func(p *Policy) { p.DefaultImage = "" },
		"default over max":    func(p *Policy) { p.DefaultLimits.MemoryBytes = p.MaxLimits.MemoryBytes + 1 },
		"zero default":        func(p *Policy) { p.DefaultLimits.Pids = 0 },
		"zero max cpus":       func(p *Policy) { p.MaxLimits.CPUs = 0 },
		"no timeout":          func(p *Policy) { p.DefaultTimeout = 0 },
		"timeout over max":    func(p *Policy) { p.DefaultTimeout = p.MaxTimeout + 1 },
		"root without allow":  func(p *Policy) { p.DefaultUID = 0 },
		"open files too many": func(p *Policy) { p.MaxLimits.OpenFiles = math.MaxUint64 },
	} {
		p := DefaultPolicy()
		edit(&p)
		if err := p.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := p.Apply(Spec{ID: "x"}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: Apply with a bad policy: %v", name, err)
		}
	}
}

func FuzzPolicyApply(f *testing.F) {
	f.Add("id", "/w", "A=1", int64(0), 0.0, "none", "runc")
	f.Add("../x", "rel", "A", int64(-1), -1.0, "host", "gvisor")
	f.Fuzz(func(t *testing.T, id, workdir, env string, mem int64, cpus float64, network, isolation string) {
		p := DefaultPolicy()
		spec := Spec{ID: id, Workdir: workdir, Env: []string{env}, Limits: Limits{MemoryBytes: mem, CPUs: cpus},
			Network: Network(network), Isolation: Isolation(isolation)}
		out, err := p.Apply(spec)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrPermissionDenied) {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		// What is accepted is within the policy and complete.
		l := out.Limits
		if l.MemoryBytes < minMemoryBytes || l.MemoryBytes > p.MaxLimits.MemoryBytes || l.CPUs < minCPUs || l.CPUs > p.MaxLimits.CPUs ||
			out.UID == nil || *out.UID == 0 || out.Workdir == "" || out.Workdir[0] != '/' || out.Timeout <= 0 {
			t.Fatalf("accepted %+v", out)
		}
	})
}
