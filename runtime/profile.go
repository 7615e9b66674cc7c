package runtime

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The security profile. Every task gets all of it; a spec can only choose
// values inside the policy (limits, user, network when allowed), never turn
// a part of the profile off.

// cpuPeriod is the CFS period; the quota is CPUs times it.
const cpuPeriod = 100000 // µs

// hostnameLen is how much of the task id becomes the task's hostname.
const hostnameLen = 12

// defaultPath is the PATH of an image whose config sets no environment.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// extraMaskedPaths are hidden on top of containerd's defaults (the
// RAPL energy counters leak what other tenants compute: CVE-2020-8694).
var extraMaskedPaths = []string{"/sys/devices/virtual/powercap"}

// extraReadonlyPaths are made read-only on top of containerd's defaults
// (which already include /proc/sysrq-trigger; listed so that the profile
// does not depend on that).
var extraReadonlyPaths = []string{"/proc/sysrq-trigger"}

// profile is what the spec of one task is built from, after Policy.Apply.
type profile struct {
	spec     Spec
	image    ocispec.ImageConfig
	setSwap  bool // memory.memsw (cgroup v1) or memory.swap (v2) exists: pin swap to 0
	hostname string
}

// specOpts turns a profile into containerd spec options, applied on top of
// containerd's default Linux spec (pid, ipc, uts, mount and network
// namespaces; /proc, /dev, /sys mounts; masked and read-only /proc paths;
// every device denied but the standard few).
func (p profile) specOpts() []oci.SpecOpts {
	s := p.spec
	return []oci.SpecOpts{
		p.withProcess,
		oci.WithHostname(p.hostname),
		p.withNamespaces,
		p.withMounts,
		p.withResources,
		withHardening,
		// After the capabilities are set: the profile allows the syscalls
		// that the (now empty) capability set would.
		seccomp.WithDefaultProfile(),
		oci.WithAnnotations(map[string]string{labelTask: s.ID}),
	}
}

// withProcess sets argv, env, cwd, user and rlimits.
func (p profile) withProcess(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	args := p.spec.Command
	if len(args) == 0 {
		args = append(slices.Clone(p.image.Entrypoint), p.image.Cmd...)
	}
	if len(args) == 0 {
		return fmt.Errorf("no command given and the image sets none: give a command")
	}
	s.Process.Args = args
	env := p.image.Env
	if len(env) == 0 {
		env = []string{defaultPath}
	}
	s.Process.Env = mergeEnv(env, p.spec.Env)
	s.Process.Cwd = p.spec.Workdir
	s.Process.Terminal = false
	uid, gid := *p.spec.UID, *p.spec.GID
	s.Process.User = specs.User{UID: uid, GID: gid, AdditionalGids: []uint32{gid}}
	n := p.spec.Limits.OpenFiles
	// No one file may outgrow the disk limit: the kernel stops a write
	// past it at once (SIGXFSZ, or EFBIG where the signal is ignored). One
	// byte over, so that a file cut there shows as over the limit.
	s.Process.Rlimits = []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Hard: n, Soft: n},
		{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
	}
	if d := p.spec.Limits.DiskBytes; d > 0 {
		fsize := uint64(d) + 1
		s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_FSIZE", Hard: fsize, Soft: fsize})
	}
	return nil
}

// mergeEnv returns base with each K=V of over replacing the entry with the
// same K, or appended.
func mergeEnv(base, over []string) []string {
	out := slices.Clone(base)
	idx := make(map[string]int, len(out))
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// withNamespaces gives the task its own pid, ipc, uts, mount, cgroup and
// (unless host network was granted) network namespaces.
func (p profile) withNamespaces(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	want := []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.CgroupNamespace}
	if p.spec.Network != NetworkHost {
		want = append(want, specs.NetworkNamespace)
	}
	ns := make([]specs.LinuxNamespace, 0, len(want))
	for _, t := range want {
		ns = append(ns, specs.LinuxNamespace{Type: t}) // no Path: always a new one
	}
	s.Linux.Namespaces = ns
	return nil
}

// withMounts adds the size-capped /tmp and the workspace, and makes sure
// nothing else is mounted there.
func (p profile) withMounts(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	s.Mounts = slices.DeleteFunc(s.Mounts, func(m specs.Mount) bool {
		return m.Destination == "/tmp" || m.Destination == WorkspacePath
	})
	s.Mounts = append(s.Mounts, specs.Mount{
		Destination: "/tmp",
		Type:        "tmpfs",
		Source:      "tmpfs",
		Options:     []string{"nosuid", "nodev", "noexec", "mode=1777", "size=" + strconv.FormatInt(p.spec.Limits.TmpBytes, 10)},
	})
	if p.spec.WorkspaceDir != "" {
		s.Mounts = append(s.Mounts, specs.Mount{
			Destination: WorkspacePath,
			Type:        "bind",
			Source:      p.spec.WorkspaceDir,
			Options:     []string{"rbind", "rw", "nosuid", "nodev"},
		})
	}
	return nil
}

// withResources sets the cgroup limits: memory with no swap, CFS quota,
// pids.
func (p profile) withResources(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	r, l := s.Linux.Resources, p.spec.Limits
	mem := l.MemoryBytes
	r.Memory = &specs.LinuxMemory{Limit: &mem}
	if p.setSwap {
		// memory+swap = memory: no swap at all.
		swap := mem
		r.Memory.Swap = &swap
	}
	quota, period := int64(l.CPUs*cpuPeriod), uint64(cpuPeriod)
	r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	r.Pids = &specs.LinuxPids{Limit: l.Pids}
	return nil
}

// withHardening drops every capability, forbids gaining privileges, makes
// the root filesystem read-only and hides the riskier /proc and /sys paths.
func withHardening(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding:    []string{},
		Effective:   []string{},
		Permitted:   []string{},
		Inheritable: []string{},
		Ambient:     []string{},
	}
	s.Process.NoNewPrivileges = true
	if s.Root == nil {
		s.Root = &specs.Root{Path: "rootfs"}
	}
	s.Root.Readonly = true
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	for _, p := range extraMaskedPaths {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, p)
		}
	}
	for _, p := range extraReadonlyPaths {
		if !slices.Contains(s.Linux.ReadonlyPaths, p) && !slices.Contains(s.Linux.MaskedPaths, p) {
			s.Linux.ReadonlyPaths = append(s.Linux.ReadonlyPaths, p)
		}
	}
	return nil
}

// shortHostname is the task's hostname: the start of its id.
func shortHostname(id string) string {
	h := id
	if len(h) > hostnameLen {
		h = h[:hostnameLen]
	}
	return strings.TrimRight(h, "._-")
}
