package datadir

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// FileConfig is the user's config file, DIR/config.toml. Every key is
// optional: a missing key keeps its default. The node translates it into
// each subsystem's Config.
type FileConfig struct {
	P2P     P2PSection        `toml:"p2p"`
	Labels  map[string]string `toml:"labels"`
	Policy  PolicySection     `toml:"policy"`
	API     APISection        `toml:"api"`
	Store   StoreSection      `toml:"store"`
	Log     LogSection        `toml:"log"`
	Process ProcessSection    `toml:"process"`
	Tasks   TasksSection      `toml:"tasks"`
	MCP     MCPSection        `toml:"mcp"`
	Browser BrowserSection    `toml:"browser"`
	LSP     LSPSection        `toml:"lsp"`
	Update  UpdateSection     `toml:"update"`
}

// TasksSection configures the sandboxed tasks this peer runs: where
// containerd is, the defaults a task gets when it asks for nothing, and the
// caps no task may exceed.
type TasksSection struct {
	ContainerdSocket string   `toml:"containerd_socket"`
	Namespace        string   `toml:"namespace"`
	DefaultImage     string   `toml:"default_image"`
	DefaultTimeout   Duration `toml:"default_timeout"`
	MaxTimeout       Duration `toml:"max_timeout"`
	DefaultMemoryMiB int64    `toml:"default_memory_mib"`
	MaxMemoryMiB     int64    `toml:"max_memory_mib"`
	DefaultCPUs      float64  `toml:"default_cpus"`
	MaxCPUs          float64  `toml:"max_cpus"`
	DefaultPids      int64    `toml:"default_pids"`
	MaxPids          int64    `toml:"max_pids"`
	DefaultTmpMiB    int64    `toml:"default_tmp_mib"`
	MaxTmpMiB        int64    `toml:"max_tmp_mib"`
	// DefaultDiskMiB and MaxDiskMiB bound what a task writes to /workspace.
	DefaultDiskMiB   int64  `toml:"default_disk_mib"`
	MaxDiskMiB       int64  `toml:"max_disk_mib"`
	DefaultUID       uint32 `toml:"default_uid"`
	AllowRoot        bool   `toml:"allow_root"`
	AllowHostNetwork bool   `toml:"allow_host_network"`
	AllowGVisor      bool   `toml:"allow_gvisor"`
	// LogStoreCapMiB bounds the output kept per task in the store; output
	// past it is kept in the task's spill file, then as a DAG.
	LogStoreCapMiB int64 `toml:"log_store_cap_mib"`
	// AcceptRemote says whether other peers of the mesh may delegate tasks
	// here; AcceptFrom, when not empty, names the only peers that may.
	AcceptRemote bool     `toml:"accept_remote"`
	AcceptFrom   []string `toml:"accept_from"`
	// MaxTasksPerPeer bounds the tasks one other peer may have running here
	// at once; past it its submissions are refused as unavailable (0: no
	// bound).
	MaxTasksPerPeer int `toml:"max_tasks_per_peer"`
	// LostAfter is how long a coordinator waits for an executor it cannot
	// reach before it marks the executor's task lost.
	LostAfter Duration `toml:"lost_after"`
	// KeepTasks and KeepFor bound the ended tasks a peer remembers (records,
	// kept output, result pins): the newest KeepTasks, none older than
	// KeepFor. 0 lifts a bound.
	KeepTasks int      `toml:"keep_tasks"`
	KeepFor   Duration `toml:"keep_for"`
}

// DefaultTasksSection mirrors runtime.DefaultPolicy.
func DefaultTasksSection() TasksSection {
	p := runtime.DefaultPolicy()
	return TasksSection{
		ContainerdSocket: "/run/containerd/containerd.sock",
		Namespace:        "cortex",
		DefaultImage:     p.DefaultImage,
		DefaultTimeout:   Duration{p.DefaultTimeout},
		MaxTimeout:       Duration{p.MaxTimeout},
		DefaultMemoryMiB: p.DefaultLimits.MemoryBytes >> 20,
		MaxMemoryMiB:     p.MaxLimits.MemoryBytes >> 20,
		DefaultCPUs:      p.DefaultLimits.CPUs,
		MaxCPUs:          p.MaxLimits.CPUs,
		DefaultPids:      p.DefaultLimits.Pids,
		MaxPids:          p.MaxLimits.Pids,
		DefaultTmpMiB:    p.DefaultLimits.TmpBytes >> 20,
		MaxTmpMiB:        p.MaxLimits.TmpBytes >> 20,
		DefaultDiskMiB:   p.DefaultLimits.DiskBytes >> 20,
		MaxDiskMiB:       p.MaxLimits.DiskBytes >> 20,
		DefaultUID:       p.DefaultUID,
		AllowRoot:        p.AllowRoot,
		AllowHostNetwork: p.AllowHostNet,
		AllowGVisor:      p.AllowGVisor,
		LogStoreCapMiB:   64,
		AcceptRemote:     true,
		MaxTasksPerPeer:  16,
		LostAfter:        Duration{60 * time.Second},
		KeepTasks:        1000,
		KeepFor:          Duration{7 * 24 * time.Hour},
	}
}

// BrowserSection configures the browser bridge: persistent Chromium
// sessions this peer hosts for the mesh.
type BrowserSection struct {
	// ExecPath is Chromium's binary (the real one, not Debian's wrapper).
	ExecPath string `toml:"exec_path"`
	// Warm starts Chromium with the peer rather than on first use.
	Warm bool `toml:"warm"`
	// UID runs Chromium (with its own sandbox) when the peer is root.
	UID uint32 `toml:"uid"`
	// Caps: sessions open at once, tabs per session, Chromium's memory in
	// MiB (0: none; past it new sessions are refused).
	MaxSessions  int   `toml:"max_sessions"`
	MaxTabs      int   `toml:"max_tabs"`
	MaxMemoryMiB int64 `toml:"max_memory_mib"`
	// IdleTTL is a session's lease: each call renews it; at its end the
	// session's state is saved and it is closed.
	IdleTTL         Duration `toml:"idle_ttl"`
	NavigateTimeout Duration `toml:"navigate_timeout"`
	// SnapshotBudget is a snapshot's default size in bytes (≈ 4 a token).
	SnapshotBudget int `toml:"snapshot_budget"`
	// PersistentProfiles keeps the profile of a session opened with a
	// name under the data dir, across closes and restarts.
	PersistentProfiles bool `toml:"persistent_profiles"`
	// Who may open sessions here, as for tasks.
	AcceptRemote bool     `toml:"accept_remote"`
	AcceptFrom   []string `toml:"accept_from"`
	// Origins sessions may load (empty: any) and may never load.
	AllowedOrigins []string `toml:"allowed_origins"`
	BlockedOrigins []string `toml:"blocked_origins"`
}

// DefaultBrowserSection is the bridge's defaults.
func DefaultBrowserSection() BrowserSection {
	return BrowserSection{
		ExecPath: "/usr/lib/chromium/chromium", UID: 64123,
		MaxSessions: 20, MaxTabs: 10, IdleTTL: Duration{30 * time.Minute},
		NavigateTimeout: Duration{30 * time.Second}, SnapshotBudget: 32 << 10,
		AcceptRemote: true,
	}
}

func (b BrowserSection) validate() error {
	var errs []error
	for _, s := range b.AcceptFrom {
		if _, err := peer.Decode(s); err != nil {
			errs = append(errs, fmt.Errorf("browser.accept_from: %q is not a peer id: %v", s, err))
		}
	}
	if b.MaxSessions <= 0 || b.MaxTabs <= 0 || b.MaxMemoryMiB < 0 || b.SnapshotBudget <= 0 || b.IdleTTL.Duration <= 0 || b.NavigateTimeout.Duration <= 0 {
		errs = append(errs, errors.New("browser: max_sessions, max_tabs, snapshot_budget, idle_ttl and navigate_timeout must be positive, max_memory_mib 0 or more"))
	}
	return errors.Join(errs...)
}

// LSPSection configures the language servers this peer runs, one per
// workspace, shared by every client (cortex-peer lsp ...).
type LSPSection struct {
	// UID runs the servers (with a scrubbed environment) when the peer is
	// root.
	UID uint32 `toml:"uid"`
	// IdleTimeout shuts a server down when no call used it for this long.
	IdleTimeout Duration `toml:"idle_timeout"`
	// InitTimeout bounds a server's start; one that hangs is killed and
	// tried again later.
	InitTimeout Duration `toml:"init_timeout"`
	MaxServers  int      `toml:"max_servers"`
	// MaxMemoryMiB restarts a server that uses more; 0: none.
	MaxMemoryMiB int64 `toml:"max_memory_mib"`
	// Who may ask this peer's servers, as for tasks.
	AcceptRemote bool     `toml:"accept_remote"`
	AcceptFrom   []string `toml:"accept_from"`
	// Servers adds language servers (gopls is built in), by name.
	Servers map[string]LSPServerSection `toml:"servers"`
}

// LSPServerSection is one language server a user installed.
type LSPServerSection struct {
	Command     []string       `toml:"command"`
	Languages   []string       `toml:"languages"`
	Patterns    []string       `toml:"patterns"`
	InitOptions map[string]any `toml:"init_options"`
}

// DefaultLSPSection is the language servers' defaults.
func DefaultLSPSection() LSPSection {
	return LSPSection{UID: 64124, IdleTimeout: Duration{15 * time.Minute}, InitTimeout: Duration{30 * time.Second}, MaxServers: 8, AcceptRemote: true}
}

func (l LSPSection) validate() error {
	var errs []error
	if l.IdleTimeout.Duration <= 0 || l.InitTimeout.Duration <= 0 || l.MaxServers <= 0 || l.MaxMemoryMiB < 0 {
		errs = append(errs, errors.New("lsp: idle_timeout, init_timeout and max_servers must be positive, max_memory_mib 0 or more"))
	}
	for _, s := range l.AcceptFrom {
		if _, err := peer.Decode(s); err != nil {
			errs = append(errs, fmt.Errorf("lsp.accept_from: %q is not a peer id: %v", s, err))
		}
	}
	for name, s := range l.Servers {
		if len(s.Command) == 0 || len(s.Patterns) == 0 {
			errs = append(errs, fmt.Errorf("lsp.servers.%s: command and patterns are required", name))
		}
	}
	return errors.Join(errs...)
}

// ProcessSection bounds the peer process itself.
type ProcessSection struct {
	// MemoryLimitMiB is a soft limit on the Go heap (as GOMEMLIMIT): the
	// collector works harder as the heap nears it. 0 leaves it unlimited;
	// the GOMEMLIMIT environment variable, when set, wins.
	MemoryLimitMiB int `toml:"memory_limit_mib"`
	// DrainDeadline is how long a drain (SIGTERM, cortex-peer drain) lets
	// running tasks end before it kills them and hands them back.
	DrainDeadline Duration `toml:"drain_deadline"`
}

// UpdateSection configures the signed self-update. A peer with no trusted
// key never updates.
type UpdateSection struct {
	// TrustedKeys are release public keys as release.pub holds them.
	TrustedKeys []string `toml:"trusted_keys"`
	// Auto installs a trusted release when it arrives; false only records
	// it (update status shows it).
	Auto bool `toml:"auto"`
	// Window is when installs may start, "HH:MM-HH:MM" local time (it may
	// wrap past midnight); empty: any time.
	Window string `toml:"window"`
	// HealthTimeout is how long a new version has to come up healthy; one
	// that exits or crashes within it is rolled back.
	HealthTimeout Duration `toml:"health_timeout"`
}

// DefaultHealthTimeout is the default of UpdateSection.HealthTimeout.
const DefaultHealthTimeout = 60 * time.Second

// DefaultDrainDeadline is the default of ProcessSection.DrainDeadline.
const DefaultDrainDeadline = 10 * time.Minute

// P2PSection configures the host, discovery and heartbeats.
type P2PSection struct {
	Listen            []string      `toml:"listen"`
	Bootstrap         []string      `toml:"bootstrap"`
	MDNS              bool          `toml:"mdns"`
	DHT               bool          `toml:"dht"`
	MeshKeyFile       string        `toml:"mesh_key_file"`
	HeartbeatInterval Duration      `toml:"heartbeat_interval"`
	HeartbeatExpiry   Duration      `toml:"heartbeat_expiry"`
	Limits            LimitsSection `toml:"limits"`
}

// LimitsSection bounds what the mesh can make this peer spend.
type LimitsSection struct {
	MaxConnections  int `toml:"max_connections"`
	MaxStreams      int `toml:"max_streams"`
	MaxMemoryMiB    int `toml:"max_memory_mib"`
	MaxFileDescs    int `toml:"max_file_descriptors"`
	ConnectionsLow  int `toml:"connections_low"`
	ConnectionsHigh int `toml:"connections_high"`
	// ServeBytesPerSecond caps the rate at which this peer serves blocks
	// to the mesh (0: no cap), like rsync's --bwlimit on the sending side.
	ServeBytesPerSecond int64 `toml:"serve_bytes_per_second"`
}

// PolicySection says who may use this peer.
type PolicySection struct {
	// Allowlist of peer ids; when not empty, only these may connect.
	Allowlist []string `toml:"allowlist"`
}

// APISection locates the local API (clients read that part through
// locate) and bounds the paths its callers may name.
type APISection struct {
	locate.API
	// AllowedRoots are the directories the API and MCP may read and write
	// for a caller (workspaces, merge and get targets, CAR and image files):
	// a path must resolve, after symlinks, inside one of them. The peer
	// usually runs as root, and its API token is all a caller holds, so
	// without this a call could write into /etc. An empty list refuses
	// every path; "/" allows all.
	AllowedRoots []string `toml:"allowed_roots"`
}

// DefaultAllowedRoots is the home of the user who runs the command and the
// system's temporary directory. Under sudo that user is SUDO_USER, not
// root: `sudo cortex-peer init` is how a user sets up a peer that runs as
// root, and it is their own files they mean to work on.
func DefaultAllowedRoots() []string {
	var roots []string
	if home := invokingHome(); home != "" {
		roots = append(roots, home)
	}
	return append(roots, os.TempDir())
}

// invokingHome is the home of the user behind this process: SUDO_USER's
// when root runs it through sudo, else $HOME's. Empty when neither is known.
func invokingHome() string {
	if os.Geteuid() == 0 {
		if name := os.Getenv("SUDO_USER"); name != "" && name != "root" {
			if u, err := user.Lookup(name); err == nil && filepath.IsAbs(u.HomeDir) {
				return u.HomeDir
			}
		}
	}
	if home, err := os.UserHomeDir(); err == nil && filepath.IsAbs(home) {
		return home
	}
	return ""
}

// MCPSection configures the MCP streamable-HTTP endpoint. Empty Listen
// serves none: `cortex-peer mcp` (stdio) needs no listener.
type MCPSection struct {
	// Listen is a loopback host:port, e.g. "127.0.0.1:7777".
	Listen string `toml:"listen"`
	// TokenFile holds the bearer token; empty uses the API token.
	TokenFile string `toml:"token_file"`
}

// StoreSection locates the local store.
type StoreSection struct {
	Dir string `toml:"dir"`
}

// LogSection sets the log level (debug, info, warn, error) and format (text, json).
type LogSection struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Duration is a time.Duration written as "5s" in the config file.
type Duration struct{ time.Duration }

// UnmarshalText parses "5s", "1m30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as "5s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// DefaultFileConfig is the config a missing key falls back to.
func DefaultFileConfig() FileConfig {
	def := p2p.DefaultConfig()
	return FileConfig{
		P2P: P2PSection{
			Listen:            def.ListenAddrs,
			MDNS:              def.MDNS,
			DHT:               def.DHT,
			MeshKeyFile:       MeshKeyFile,
			HeartbeatInterval: Duration{def.Heartbeat.Interval},
			HeartbeatExpiry:   Duration{def.Heartbeat.Expiry},
			Limits: LimitsSection{
				MaxConnections:  def.Limits.MaxConnections,
				MaxStreams:      def.Limits.MaxStreams,
				MaxMemoryMiB:    int(def.Limits.MaxMemoryBytes >> 20),
				MaxFileDescs:    def.Limits.MaxFileDescs,
				ConnectionsLow:  def.Connection.Low,
				ConnectionsHigh: def.Connection.High,
			},
		},
		Labels:  map[string]string{},
		API:     APISection{API: locate.DefaultAPI(), AllowedRoots: DefaultAllowedRoots()},
		Store:   StoreSection{Dir: StoreDir},
		Log:     LogSection{Level: "info", Format: "text"},
		Process: ProcessSection{MemoryLimitMiB: DefaultMemoryLimitMiB, DrainDeadline: Duration{DefaultDrainDeadline}},
		Tasks:   DefaultTasksSection(),
		Browser: DefaultBrowserSection(),
		LSP:     DefaultLSPSection(),
		Update:  UpdateSection{Auto: true, HealthTimeout: Duration{DefaultHealthTimeout}},
	}
}

// DefaultMemoryLimitMiB keeps a peer's heap near 256 MiB through a 1 GiB
// transfer; an idle peer uses well under 64 MiB.
const DefaultMemoryLimitMiB = 256

// LoadConfig reads DIR/config.toml over the defaults. Unknown keys are an
// error, so a typo does not pass silently.
func (d Dir) LoadConfig() (FileConfig, error) {
	cfg := DefaultFileConfig()
	p := d.path(ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return cfg, nil
		}
		return FileConfig{}, fmt.Errorf("read config: %w", err)
	}
	md, err := toml.Decode(string(b), &cfg)
	if err != nil {
		return FileConfig{}, fmt.Errorf("config %s: %v: %w", p, err, errdefs.ErrInvalid)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return FileConfig{}, fmt.Errorf("config %s: unknown keys %s: %w", p, strings.Join(keys, ", "), errdefs.ErrInvalid)
	}
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	if err := cfg.Validate(); err != nil {
		return FileConfig{}, fmt.Errorf("config %s: %w", p, err)
	}
	return cfg, nil
}

// Validate checks what can be checked without starting anything.
func (c FileConfig) Validate() error {
	var errs []error
	if err := validateConfigLists(c.P2P.Listen, c.P2P.Bootstrap, c.Labels); err != nil {
		errs = append(errs, err)
	}
	for _, s := range c.Policy.Allowlist {
		if _, err := peer.Decode(s); err != nil {
			errs = append(errs, fmt.Errorf("policy.allowlist: %q is not a peer id: %v", s, err))
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	if c.Process.DrainDeadline.Duration < 0 {
		errs = append(errs, fmt.Errorf("process.drain_deadline %v: want 0 or more", c.Process.DrainDeadline.Duration))
	}
	if c.Update.HealthTimeout.Duration <= 0 {
		errs = append(errs, fmt.Errorf("update.health_timeout %v: want more than 0", c.Update.HealthTimeout.Duration))
	}
	if c.Process.MemoryLimitMiB < 0 {
		errs = append(errs, fmt.Errorf("process.memory_limit_mib %d: want 0 (none) or more", c.Process.MemoryLimitMiB))
	}
	if err := c.Tasks.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Browser.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.LSP.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.API.Socket == "" || c.API.TokenFile == "" || c.Store.Dir == "" {
		errs = append(errs, errors.New("api.socket, api.token_file and store.dir must not be empty"))
	}
	for _, r := range c.API.AllowedRoots {
		if !filepath.IsAbs(r) {
			errs = append(errs, fmt.Errorf("api.allowed_roots: %q is not an absolute path", r))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
	}
	return nil
}

func (t TasksSection) validate() error {
	var errs []error
	if t.ContainerdSocket == "" || t.Namespace == "" {
		errs = append(errs, errors.New("tasks.containerd_socket and tasks.namespace must not be empty"))
	}
	pairs := []struct {
		name     string
		def, max float64
	}{
		{"timeout", t.DefaultTimeout.Seconds(), t.MaxTimeout.Seconds()},
		{"memory_mib", float64(t.DefaultMemoryMiB), float64(t.MaxMemoryMiB)},
		{"cpus", t.DefaultCPUs, t.MaxCPUs},
		{"pids", float64(t.DefaultPids), float64(t.MaxPids)},
		{"tmp_mib", float64(t.DefaultTmpMiB), float64(t.MaxTmpMiB)},
		{"disk_mib", float64(t.DefaultDiskMiB), float64(t.MaxDiskMiB)},
	}
	for _, p := range pairs {
		if p.def <= 0 || p.max < p.def {
			errs = append(errs, fmt.Errorf("tasks.default_%s %v and tasks.max_%s %v: want 0 < default <= max", p.name, p.def, p.name, p.max))
		}
	}
	if t.LogStoreCapMiB < 0 {
		errs = append(errs, fmt.Errorf("tasks.log_store_cap_mib %d: want 0 or more", t.LogStoreCapMiB))
	}
	for _, s := range t.AcceptFrom {
		if _, err := peer.Decode(s); err != nil {
			errs = append(errs, fmt.Errorf("tasks.accept_from: %q is not a peer id: %v", s, err))
		}
	}
	if t.MaxTasksPerPeer < 0 {
		errs = append(errs, fmt.Errorf("tasks.max_tasks_per_peer %d: want 0 (no bound) or more", t.MaxTasksPerPeer))
	}
	if t.KeepTasks < 0 || t.KeepFor.Duration < 0 {
		errs = append(errs, fmt.Errorf("tasks.keep_tasks %d, tasks.keep_for %v: want 0 (no bound) or more", t.KeepTasks, t.KeepFor.Duration))
	}
	if t.LostAfter.Duration <= 0 {
		errs = append(errs, fmt.Errorf("tasks.lost_after %v: want more than 0", t.LostAfter.Duration))
	}
	return errors.Join(errs...)
}

func validateConfigLists(listen, bootstrap []string, labels map[string]string) error {
	var errs []error
	for _, a := range listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("listen address %q: %v", a, err))
		}
	}
	for _, a := range bootstrap {
		if _, err := peer.AddrInfoFromString(a); err != nil {
			errs = append(errs, fmt.Errorf("bootstrap address %q: %v (want a multiaddr ending in /p2p/PEER_ID, as `cortex-peer id` prints)", a, err))
		}
	}
	if len(labels) > maxLabels {
		errs = append(errs, fmt.Errorf("%d labels, at most %d", len(labels), maxLabels))
	}
	for k, v := range labels {
		if k == "" || len(k) > 256 || len(v) > 256 || strings.ContainsAny(k, "=\n") {
			errs = append(errs, fmt.Errorf("label %q: key must be 1..256 bytes without '=', value at most 256 bytes", k))
		}
	}
	return errors.Join(errs...)
}

// maxLabels matches what a heartbeat may carry.
const maxLabels = 64

// ParseLabel parses "key=value".
func ParseLabel(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("label %q: want key=value: %w", s, errdefs.ErrInvalid)
	}
	return k, v, nil
}

// configTemplate is parsed on first use, not at start: every command of the
// binary would pay for it.
var configTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("config").Funcs(template.FuncMap{
		"list":  tomlList,
		"quote": strconv.Quote,
	}).Parse(`# cortex-peer configuration. Every key is optional: a missing key keeps the
# default shown here. Relative paths are inside this data directory.

[p2p]
# Multiaddrs to listen on. Port 0 picks a free port; a second peer on one
# machine needs other ports. QUIC addresses (/udp/PORT/quic-v1) work only for
# a mesh run on an allowlist alone: go-libp2p's QUIC cannot carry a mesh key.
listen = {{list .Listen}}
# Full multiaddrs (ending in /p2p/PEER_ID, as "cortex-peer id" prints) of peers
# to join at start and to redial while they are unreachable.
bootstrap = {{list .Bootstrap}}
# Find peers of the same mesh on the local network.
mdns = {{.MDNS}}
# Run the mesh's own kad-DHT to find peers beyond one LAN.
dht = {{.DHT}}
# The private-network key shared by the whole mesh ("cortex-peer mesh-key"
# prints it). Empty: no mesh key, and then policy.allowlist is required.
mesh_key_file = {{quote .MeshKeyFile}}
# How often this peer announces itself, and how long an announcement lasts
# once its peer is no longer connected (a connected peer whose heartbeats are
# late stays listed for ten expiries, at least a minute).
heartbeat_interval = {{quote .HeartbeatInterval.String}}
heartbeat_expiry = {{quote .HeartbeatExpiry.String}}

[p2p.limits]
# Enforced by libp2p's resource manager and connection manager.
max_connections = {{.Limits.MaxConnections}}
max_streams = {{.Limits.MaxStreams}}
max_memory_mib = {{.Limits.MaxMemoryMiB}}
max_file_descriptors = {{.Limits.MaxFileDescs}}
# Above connections_high, connections are trimmed down to connections_low.
connections_low = {{.Limits.ConnectionsLow}}
connections_high = {{.Limits.ConnectionsHigh}}
# Bytes a second this peer serves blocks at, to every peer together (0: no
# cap).
serve_bytes_per_second = {{.Limits.ServeBytesPerSecond}}

[labels]
# key = "value" pairs announced to the mesh, for task placement.
{{- range $k, $v := .Labels}}
{{quote $k}} = {{quote $v}}
{{- end}}

[policy]
# Peer ids allowed to connect; empty allows every holder of the mesh key.
allowlist = []

[api]
# The local API: a unix socket (mode 0600) and the token every request needs.
socket = "api.sock"
token_file = "api.token"
# Directories whose files the API and MCP may read and write for a caller
# (workspace add/get/merge, run --workspace, CAR and image files). A path
# must resolve, after symlinks, inside one of them, else it is refused with
# permission_denied. The default is the home of the user who ran init (under
# sudo, SUDO_USER's) and the system's temporary directory. To work on files
# elsewhere, add their directory here ("/srv/project") and restart the peer;
# "/" allows every path the peer's user can reach.
allowed_roots = {{list .AllowedRoots}}

[store]
dir = "store"

[mcp]
# The MCP endpoint for AI agents as streamable HTTP at http://LISTEN/mcp:
# a loopback host:port such as "127.0.0.1:7777"; empty serves none
# ("cortex-peer mcp" speaks MCP on stdio without it). Every request needs
# "Authorization: Bearer TOKEN" with the content of token_file (empty: the
# API token), and a foreign Host or Origin is refused.
listen = ""
token_file = ""

[log]
# debug, info, warn or error; text or json.
level = "info"
format = "text"

[process]
# Soft limit of the Go heap in MiB (like GOMEMLIMIT, which wins when set);
# 0 for none.
memory_limit_mib = 256
# SIGTERM (and cortex-peer drain) first drains the peer: no new tasks, the
# running ones may end within this deadline, then are stopped and handed
# back to their coordinators; every result is delivered before the peer
# exits. A second SIGTERM or SIGINT stops at once.
drain_deadline = "{{.Process.DrainDeadline}}"

[update]
# Signed self-update over the mesh (docs/updates.md). Paste the content
# of a release.pub here to install the releases its key signs; with no
# trusted key this peer never updates.
trusted_keys = []
# Install trusted releases as they arrive (false: only record them).
auto = true
# When installs may start, "HH:MM-HH:MM" local time; empty: any time.
window = ""
# A new version that is not up and healthy within this, or that exits
# within it, is rolled back to the previous one and never tried again.
health_timeout = "{{.Update.HealthTimeout}}"

[tasks]
# Sandboxed tasks run in containerd (make deps installs and starts it).
containerd_socket = "/run/containerd/containerd.sock"
namespace = "cortex"
# What a task gets when it asks for nothing, and the most it may ask for.
default_image = {{quote .Tasks.DefaultImage}}
default_timeout = {{quote .Tasks.DefaultTimeout.String}}
max_timeout = {{quote .Tasks.MaxTimeout.String}}
default_memory_mib = {{.Tasks.DefaultMemoryMiB}}
max_memory_mib = {{.Tasks.MaxMemoryMiB}}
default_cpus = {{.Tasks.DefaultCPUs}}
max_cpus = {{.Tasks.MaxCPUs}}
default_pids = {{.Tasks.DefaultPids}}
max_pids = {{.Tasks.MaxPids}}
# Size of the tmpfs at /tmp inside a task.
default_tmp_mib = {{.Tasks.DefaultTmpMiB}}
max_tmp_mib = {{.Tasks.MaxTmpMiB}}
# What a task may write to /workspace, in MiB: past it the task is killed,
# fails with "disk limit exceeded", and nothing of its workspace comes back.
default_disk_mib = {{.Tasks.DefaultDiskMiB}}
max_disk_mib = {{.Tasks.MaxDiskMiB}}
# Tasks run as this user (65534 is nobody) unless they ask for another;
# uid 0 only when allow_root is true.
default_uid = {{.Tasks.DefaultUID}}
allow_root = {{.Tasks.AllowRoot}}
# Whether a task may share the host's network (otherwise it has only loopback).
allow_host_network = {{.Tasks.AllowHostNetwork}}
# Whether a task may ask for the gVisor tier (needs runsc).
allow_gvisor = {{.Tasks.AllowGVisor}}
# Output kept per task in the store, in MiB; the rest goes to a spill file,
# then to a DAG pinned with the task, so every byte can be read back with
# "logs".
log_store_cap_mib = {{.Tasks.LogStoreCapMiB}}
# Whether other peers of the mesh may delegate tasks to this one, and, when
# accept_from is not empty, which (peer ids).
accept_remote = {{.Tasks.AcceptRemote}}
accept_from = [{{range $i, $p := .Tasks.AcceptFrom}}{{if $i}}, {{end}}"{{$p}}"{{end}}]
# Tasks one other peer may have running here at once; past it, its
# submissions are refused as unavailable until one ends (0: no bound).
max_tasks_per_peer = {{.Tasks.MaxTasksPerPeer}}
# A task whose executor cannot be reached for this long is marked lost.
lost_after = "{{.Tasks.LostAfter}}"
# Ended tasks this peer remembers (records, kept output, result pins): the
# newest keep_tasks, none older than keep_for; 0 lifts a bound.
keep_tasks = {{.Tasks.KeepTasks}}
keep_for = "{{.Tasks.KeepFor}}"

[browser]
# Persistent Chromium sessions this peer hosts (cortex-peer browser ...).
# Chromium runs as uid, never root, with its own sandbox on.
exec_path = {{quote .Browser.ExecPath}}
uid = {{.Browser.UID}}
# Start Chromium with the peer rather than on first use.
warm = {{.Browser.Warm}}
max_sessions = {{.Browser.MaxSessions}}
max_tabs = {{.Browser.MaxTabs}}
# Chromium's memory in MiB past which new sessions are refused; 0 for none.
max_memory_mib = {{.Browser.MaxMemoryMiB}}
# A session idle this long has its state saved and is closed.
idle_ttl = "{{.Browser.IdleTTL}}"
navigate_timeout = "{{.Browser.NavigateTimeout}}"
# A snapshot's default size in bytes (about 4 a token).
snapshot_budget = {{.Browser.SnapshotBudget}}
# Keep the profile of a session opened with --name under the data dir.
persistent_profiles = {{.Browser.PersistentProfiles}}
# Whether other peers may open sessions here, and, when accept_from is not
# empty, which (peer ids).
accept_remote = {{.Browser.AcceptRemote}}
accept_from = []
# Origins sessions may load: "https://host:port", "host" or "*.host";
# empty allowed_origins allows any. Blocked wins. Only http(s) is loaded.
allowed_origins = []
blocked_origins = []

[lsp]
# Language servers, one per workspace, shared by every client
# (cortex-peer lsp ...). gopls is built in; they run as uid, never root,
# with a scrubbed environment and no module downloads.
uid = {{.LSP.UID}}
idle_timeout = "{{.LSP.IdleTimeout}}"
init_timeout = "{{.LSP.InitTimeout}}"
max_servers = {{.LSP.MaxServers}}
# A server using more memory is restarted; 0 for no cap.
max_memory_mib = {{.LSP.MaxMemoryMiB}}
# Whether other peers may ask this peer's servers (their workspace is
# fetched here by its root), and, when accept_from is not empty, which.
accept_remote = {{.LSP.AcceptRemote}}
accept_from = []
# Another language server, e.g.:
# [lsp.servers.pyright]
# command = ["pyright-langserver", "--stdio"]
# languages = ["python"]
# patterns = ["pyproject.toml", "setup.py", "*.py"]
`))
})

type templateData struct {
	P2PSection
	Labels       map[string]string
	Tasks        TasksSection
	Browser      BrowserSection
	LSP          LSPSection
	Process      ProcessSection
	Update       UpdateSection
	AllowedRoots []string
}

func renderConfig(opts InitOptions) string {
	def := DefaultFileConfig()
	data := templateData{P2PSection: def.P2P, Labels: opts.Labels, Tasks: def.Tasks, Browser: def.Browser, LSP: def.LSP, Process: def.Process, Update: def.Update, AllowedRoots: def.API.AllowedRoots}
	if opts.AllowedRoots != nil {
		data.AllowedRoots = opts.AllowedRoots
	}
	if len(opts.Listen) > 0 {
		data.Listen = opts.Listen
	}
	data.Bootstrap = opts.Bootstrap
	if opts.DisableMDNS {
		data.MDNS = false
	}
	if opts.HeartbeatInterval > 0 {
		data.HeartbeatInterval = Duration{opts.HeartbeatInterval}
		data.HeartbeatExpiry = Duration{3 * opts.HeartbeatInterval}
	}
	var b bytes.Buffer
	if err := configTemplate().Execute(&b, data); err != nil {
		panic(fmt.Sprintf("config template: %v", err)) // a bug in the template, not input
	}
	return b.String()
}

func tomlList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
