package runtime

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/identifiers"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Policy is what an executor allows and what a spec gets when it asks for
// nothing. It comes from the peer's config, never from a spec.
type Policy struct {
	DefaultImage   string
	DefaultLimits  Limits        // applied to zero fields of a spec's limits
	MaxLimits      Limits        // a spec asking for more is refused
	DefaultTimeout time.Duration // applied when a spec has none
	MaxTimeout     time.Duration
	DefaultUID     uint32 // 65534 (nobody) unless configured
	AllowHostNet   bool   // whether --network host may be granted
	AllowGVisor    bool   // whether --isolation gvisor may be asked for (false when runsc is missing)
	AllowRoot      bool   // whether a spec may ask for uid 0
}

// DefaultPolicy is the policy of a peer whose config says nothing.
func DefaultPolicy() Policy {
	return Policy{
		DefaultImage: "cortex/busybox:test",
		DefaultLimits: Limits{
			MemoryBytes: 512 << 20,
			CPUs:        1,
			Pids:        256,
			TmpBytes:    64 << 20,
			DiskBytes:   4 << 30,
			OpenFiles:   1024,
		},
		MaxLimits: Limits{
			MemoryBytes: 8 << 30,
			CPUs:        4,
			Pids:        4096,
			TmpBytes:    1 << 30,
			DiskBytes:   64 << 30,
			OpenFiles:   65536,
		},
		DefaultTimeout: 10 * time.Minute,
		MaxTimeout:     24 * time.Hour,
		DefaultUID:     65534,
		AllowHostNet:   false,
		AllowGVisor:    true,
	}
}

// Bounds a policy or a spec can never go past, whatever the config says:
// below them the kernel, runc or the task itself cannot work, so a value
// under them is a mistake rather than a tight limit.
const (
	minMemoryBytes = 6 << 20 // runc refuses smaller memory limits
	minCPUs        = 0.01    // a CFS quota under 1 ms per 100 ms period
	minPids        = 1
	minTmpBytes    = 4 << 10 // one page
	minDiskBytes   = 1 << 20
	minOpenFiles   = 16 // the runtime's own set-up needs a few descriptors

	maxLabels     = 64
	maxLabelBytes = 4096 // containerd's limit on key plus value
	maxIDBytes    = 76   // containerd's limit on identifiers
)

// labelPrefix is the prefix of the container labels the executor sets
// itself. A spec may not set labels under it, nor under containerd's own
// prefixes (they steer garbage collection and the shims).
const labelPrefix = "io.cortex-peer."

var reservedLabelPrefixes = []string{labelPrefix, "containerd.io/", "io.containerd."}

// Validate reports whether the policy itself makes sense: every default is
// set, within its cap, and above the floor the runtime needs.
func (p Policy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy: "+format+": %w", append(args, errdefs.ErrInvalid)...))
	}
	if p.DefaultImage == "" {
		bad("default_image is empty")
	}
	checkI := func(name string, def, max, min int64) {
		switch {
		case max < min:
			bad("max_limits.%s %d is under the floor %d", name, max, min)
		case def < min:
			bad("default_limits.%s %d is under the floor %d", name, def, min)
		case def > max:
			bad("default_limits.%s %d is over max_limits.%s %d", name, def, name, max)
		}
	}
	d, m := p.DefaultLimits, p.MaxLimits
	checkI("memory_bytes", d.MemoryBytes, m.MemoryBytes, minMemoryBytes)
	checkI("pids", d.Pids, m.Pids, minPids)
	checkI("tmp_bytes", d.TmpBytes, m.TmpBytes, minTmpBytes)
	checkI("disk_bytes", d.DiskBytes, m.DiskBytes, minDiskBytes)
	if m.OpenFiles > math.MaxInt64 || d.OpenFiles > math.MaxInt64 {
		bad("open_files over %d", int64(math.MaxInt64))
	} else {
		checkI("open_files", int64(d.OpenFiles), int64(m.OpenFiles), minOpenFiles)
	}
	switch {
	case !isFinite(m.CPUs) || m.CPUs < minCPUs:
		bad("max_limits.cpus %v is under the floor %v", m.CPUs, minCPUs)
	case !isFinite(d.CPUs) || d.CPUs < minCPUs:
		bad("default_limits.cpus %v is under the floor %v", d.CPUs, minCPUs)
	case d.CPUs > m.CPUs:
		bad("default_limits.cpus %v is over max_limits.cpus %v", d.CPUs, m.CPUs)
	}
	switch {
	case p.MaxTimeout <= 0:
		bad("max_timeout %v must be positive", p.MaxTimeout)
	case p.DefaultTimeout <= 0:
		bad("default_timeout %v must be positive", p.DefaultTimeout)
	case p.DefaultTimeout > p.MaxTimeout:
		bad("default_timeout %v is over max_timeout %v", p.DefaultTimeout, p.MaxTimeout)
	}
	if p.DefaultUID == 0 && !p.AllowRoot {
		bad("default_uid is 0 (root) but allow_root is false")
	}
	if p.DefaultUID == math.MaxUint32 {
		bad("default_uid %d is not a valid user id", p.DefaultUID)
	}
	return errors.Join(errs...)
}

// Apply checks an untrusted spec against the policy and returns it with
// every default filled in: the image, limits, timeout, user, group, network,
// isolation and working directory. The spec is copied; the caller's slices
// and maps are not shared with the result.
//
// A malformed spec (bad id, negative or tiny limits, unknown network or
// isolation, relative or unclean workdir, bad env or labels) is refused with
// errdefs.ErrInvalid; a well-formed spec asking for more than the policy
// grants (a limit over its cap, host network, gVisor, root) with
// errdefs.ErrPermissionDenied. Every problem found is reported, each naming
// its field, joined into one error.
func (p Policy) Apply(spec Spec) (Spec, error) {
	if err := p.Validate(); err != nil {
		return Spec{}, err
	}
	var errs []error
	invalid := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalid)...))
	}
	denied := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, errdefs.ErrPermissionDenied)...))
	}

	out := spec
	out.Command = slices.Clone(spec.Command)
	out.Env = slices.Clone(spec.Env)
	out.Labels = maps.Clone(spec.Labels)

	// Identity.
	switch {
	case spec.ID == "":
		invalid("id is empty")
	case len(spec.ID) > maxIDBytes:
		invalid("id is %d bytes, over %d", len(spec.ID), maxIDBytes)
	case identifiers.Validate(spec.ID) != nil:
		invalid("id %q: use letters, digits and single '.', '_' or '-' between them", spec.ID)
	}

	// Image and command.
	if out.Image == "" {
		out.Image = p.DefaultImage
	}
	if strings.ContainsFunc(out.Image, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		invalid("image %q contains spaces or control characters", out.Image)
	}
	for i, a := range spec.Command {
		if strings.IndexByte(a, 0) >= 0 {
			invalid("command[%d] contains a NUL byte", i)
		}
	}
	if len(spec.Command) > 0 && spec.Command[0] == "" {
		invalid("command[0] (the program) is empty")
	}
	for i, e := range spec.Env {
		k, _, ok := strings.Cut(e, "=")
		switch {
		case !ok:
			invalid("env[%d] %q is not KEY=VALUE", i, e)
		case k == "":
			invalid("env[%d] %q has an empty name", i, e)
		case strings.IndexByte(e, 0) >= 0:
			invalid("env[%d] contains a NUL byte", i)
		}
	}

	// Working directory and workspace.
	if spec.WorkspaceDir != "" && (!filepath.IsAbs(spec.WorkspaceDir) || filepath.Clean(spec.WorkspaceDir) != spec.WorkspaceDir) {
		invalid("workspace_dir %q must be an absolute, clean host path", spec.WorkspaceDir)
	}
	if out.Workdir == "" {
		out.Workdir = "/"
		if spec.WorkspaceDir != "" {
			out.Workdir = WorkspacePath
		}
	}
	switch w := out.Workdir; {
	case strings.IndexByte(w, 0) >= 0:
		invalid("workdir contains a NUL byte")
	case !path.IsAbs(w):
		invalid("workdir %q is relative: give an absolute path inside the task", w)
	case path.Clean(w) != w:
		invalid("workdir %q is not clean (want %q)", w, path.Clean(w))
	case underAny(w, "/proc", "/sys", "/dev"):
		invalid("workdir %q is inside /proc, /sys or /dev", w)
	}

	// User and group.
	uid := p.DefaultUID
	if spec.UID != nil {
		uid = *spec.UID
	}
	gid := uid
	if spec.GID != nil {
		gid = *spec.GID
	}
	if uid == math.MaxUint32 {
		invalid("uid %d is not a valid user id", uid)
	}
	if gid == math.MaxUint32 {
		invalid("gid %d is not a valid group id", gid)
	}
	if (uid == 0 || gid == 0) && !p.AllowRoot {
		denied("uid %d gid %d: running as root (uid or gid 0) is not allowed by this peer's policy", uid, gid)
	}
	out.UID, out.GID = &uid, &gid

	// Limits.
	l, d, m := &out.Limits, p.DefaultLimits, p.MaxLimits
	limitI := func(name string, v *int64, def, max, min int64, text func(int64) string) {
		switch {
		case *v < 0:
			invalid("limits.%s %d is negative", name, *v)
		case *v == 0:
			*v = def
		case *v < min:
			invalid("limits.%s %s is under the minimum %s", name, text(*v), text(min))
		case *v > max:
			denied("limits.%s %s is over this peer's cap %s", name, text(*v), text(max))
		}
	}
	count := func(n int64) string { return strconv.FormatInt(n, 10) }
	limitI("memory_bytes", &l.MemoryBytes, d.MemoryBytes, m.MemoryBytes, minMemoryBytes, sizeText)
	limitI("pids", &l.Pids, d.Pids, m.Pids, minPids, count)
	limitI("tmp_bytes", &l.TmpBytes, d.TmpBytes, m.TmpBytes, minTmpBytes, sizeText)
	limitI("disk_bytes", &l.DiskBytes, d.DiskBytes, m.DiskBytes, minDiskBytes, sizeText)
	switch {
	case l.OpenFiles == 0:
		l.OpenFiles = d.OpenFiles
	case l.OpenFiles < minOpenFiles:
		invalid("limits.open_files %d is under the minimum %d", l.OpenFiles, minOpenFiles)
	case l.OpenFiles > m.OpenFiles:
		denied("limits.open_files %d is over this peer's cap %d", l.OpenFiles, m.OpenFiles)
	}
	switch {
	case !isFinite(l.CPUs):
		invalid("limits.cpus %v is not a number", l.CPUs)
	case l.CPUs < 0:
		invalid("limits.cpus %v is negative", l.CPUs)
	case l.CPUs == 0:
		l.CPUs = d.CPUs
	case l.CPUs < minCPUs:
		invalid("limits.cpus %v is under the minimum %v", l.CPUs, minCPUs)
	case l.CPUs > m.CPUs:
		denied("limits.cpus %v is over this peer's cap %v", l.CPUs, m.CPUs)
	}
	switch {
	case spec.Timeout < 0:
		invalid("timeout %v is negative", spec.Timeout)
	case spec.Timeout == 0:
		out.Timeout = p.DefaultTimeout
	case spec.Timeout > p.MaxTimeout:
		denied("timeout %v is over this peer's cap %v", spec.Timeout, p.MaxTimeout)
	}

	// Network and isolation.
	switch spec.Network {
	case "", NetworkNone:
		out.Network = NetworkNone
	case NetworkHost:
		if !p.AllowHostNet {
			denied("network %q is not allowed by this peer's policy", spec.Network)
		}
	default:
		invalid("network %q is unknown (want %q or %q)", spec.Network, NetworkNone, NetworkHost)
	}
	switch spec.Isolation {
	case "", IsolationRunc:
		out.Isolation = IsolationRunc
	case IsolationGVisor:
		if !p.AllowGVisor {
			denied("isolation %q is not allowed by this peer's policy", spec.Isolation)
		}
	default:
		invalid("isolation %q is unknown (want %q or %q)", spec.Isolation, IsolationRunc, IsolationGVisor)
	}

	// Labels.
	if len(spec.Labels) > maxLabels {
		invalid("%d labels, over %d", len(spec.Labels), maxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Labels)) {
		v := spec.Labels[k]
		switch {
		case k == "":
			invalid("label with an empty key")
		case len(k)+len(v) > maxLabelBytes:
			invalid("label %q: key and value are %d bytes, over %d", k, len(k)+len(v), maxLabelBytes)
		case slices.ContainsFunc(reservedLabelPrefixes, func(pre string) bool { return strings.HasPrefix(k, pre) }):
			invalid("label %q uses a reserved prefix (%s)", k, strings.Join(reservedLabelPrefixes, ", "))
		}
	}

	if err := errors.Join(errs...); err != nil {
		return Spec{}, fmt.Errorf("task spec %q: %w", spec.ID, err)
	}
	return out, nil
}

// WorkspacePath is where Spec.WorkspaceDir appears inside a task.
const WorkspacePath = "/workspace"

func isFinite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// underAny reports whether the clean absolute path p is one of dirs or
// below one of them.
func underAny(p string, dirs ...string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// sizeText is a byte count as a user wrote it (--memory 1K): in the largest
// binary unit that divides it, else in bytes.
func sizeText(n int64) string {
	for _, u := range []struct {
		name  string
		shift uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + " " + u.name
		}
	}
	if n == 1 {
		return "1 byte"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
