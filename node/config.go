package node

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	goruntime "runtime"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	bridge "github.com/cortex-peer/cortex-peer/bridges/lsp"
	"github.com/cortex-peer/cortex-peer/node/apiserver"
	"github.com/cortex-peer/cortex-peer/node/artifacts"
	"github.com/cortex-peer/cortex-peer/node/browser"
	"github.com/cortex-peer/cortex-peer/node/buildinfo"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/node/delegation"
	"github.com/cortex-peer/cortex-peer/node/exchange"
	"github.com/cortex-peer/cortex-peer/node/lsp"
	"github.com/cortex-peer/cortex-peer/node/mcpserver"
	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	"github.com/cortex-peer/cortex-peer/node/store"
	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/node/update"
	"github.com/cortex-peer/cortex-peer/node/update/releasedir"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Config is everything one peer needs, already translated from the user's
// config file into each subsystem's Config.
type Config struct {
	Dir        datadir.Dir
	Version    string
	Labels     map[string]string
	P2P        p2p.Config
	Store      store.Config
	API        apiserver.Config
	Exchange   exchange.Config
	Tasks      tasks.Config
	Delegation delegation.Config
	Browser    browser.Config
	LSP        lsp.Config
	Artifacts  artifacts.Config
	// MCPListen is the loopback host:port of the MCP HTTP endpoint; empty
	// serves none. MCPTokenFile holds its bearer token.
	MCPListen    string
	MCPTokenFile string
	// KnownPeersInterval is how often the book is checked for peers to save
	// to the store (only new or moved ones are written), so a restarted peer
	// can rejoin without its bootstrap peers.
	KnownPeersInterval time.Duration
	// DrainDeadline is how long a drain lets running tasks end.
	DrainDeadline time.Duration
	// Update is the self-update's policy (Supervised is set by join).
	Update update.Config
}

// DefaultKnownPeersInterval is the default of Config.KnownPeersInterval.
const DefaultKnownPeersInterval = time.Second

// ConfigFromFile translates the data dir's config file into a Config,
// reading the identity and mesh key it names.
func ConfigFromFile(d datadir.Dir, fc datadir.FileConfig) (Config, error) {
	if err := fc.Validate(); err != nil {
		return Config{}, err
	}
	sk, err := d.Identity()
	if err != nil {
		return Config{}, err
	}
	p := p2p.DefaultConfig()
	p.Version = buildinfo.Version
	p.Identity = sk
	if raw, err := d.ReadMeshKey(fc); err != nil {
		return Config{}, err
	} else if raw != nil {
		if p.MeshKey, err = p2p.DecodeMeshKey(raw); err != nil {
			return Config{}, fmt.Errorf("%s: %w", d.Path(fc.P2P.MeshKeyFile), err)
		}
	}
	for _, s := range fc.Policy.Allowlist {
		id, _ := peer.Decode(s) // checked by Validate
		p.Allowlist = append(p.Allowlist, id)
	}
	p.ListenAddrs = fc.P2P.Listen
	p.Bootstrap = fc.P2P.Bootstrap
	p.MDNS = fc.P2P.MDNS
	p.DHT = fc.P2P.DHT
	p.Heartbeat = p2p.HeartbeatConfig{Interval: fc.P2P.HeartbeatInterval.Duration, Expiry: fc.P2P.HeartbeatExpiry.Duration}
	l := fc.P2P.Limits
	p.Limits = p2p.Limits{
		MaxConnections: l.MaxConnections,
		MaxStreams:     l.MaxStreams,
		MaxMemoryBytes: int64(l.MaxMemoryMiB) << 20,
		MaxFileDescs:   l.MaxFileDescs,
	}
	p.Connection.Low, p.Connection.High = l.ConnectionsLow, l.ConnectionsHigh
	cfg := Config{
		Dir:     d,
		Version: buildinfo.Version,
		Labels:  maps.Clone(fc.Labels),
		P2P:     p,
		Store:   store.DefaultConfig(d.Path(fc.Store.Dir)),
		API: apiserver.Config{
			Socket: d.Path(fc.API.Socket), TokenFile: d.Path(fc.API.TokenFile),
			AllowedRoots: fc.API.AllowedRoots, ConfigFile: d.Path(datadir.ConfigFile),
		},
		Exchange:           exchangeConfig(l),
		KnownPeersInterval: DefaultKnownPeersInterval,
		DrainDeadline:      fc.Process.DrainDeadline.Duration,
		Tasks:              tasksConfig(d, fc.Tasks),
		Delegation:         delegationConfig(fc.Tasks),
		Browser:            browserConfig(d, fc.Browser),
		Artifacts:          artifacts.DefaultConfig(),
		LSP:                lspConfig(d, fc.LSP),
		MCPListen:          fc.MCP.Listen,
		MCPTokenFile:       d.Path(fc.API.TokenFile),
	}
	if fc.MCP.TokenFile != "" {
		cfg.MCPTokenFile = d.Path(fc.MCP.TokenFile)
	}
	if cfg.Update, err = updateConfig(d, fc.Update); err != nil {
		return Config{}, err
	}
	return cfg, cfg.Validate()
}

// updateConfig translates the config file's update section.
func updateConfig(d datadir.Dir, u datadir.UpdateSection) (update.Config, error) {
	cfg := update.Config{
		Auto: u.Auto, HealthTimeout: u.HealthTimeout.Duration, Releases: releasedir.New(d.Root),
		Platform: goruntime.GOOS + "/" + goruntime.GOARCH, Version: buildinfo.Version,
	}
	for i, k := range u.TrustedKeys {
		pub, err := releasekey.ParsePublicKey(k)
		if err != nil {
			return cfg, fmt.Errorf("update.trusted_keys[%d]: %w", i, err)
		}
		cfg.TrustedKeys = append(cfg.TrustedKeys, pub)
	}
	var err error
	if cfg.Window, err = update.ParseWindow(u.Window); err != nil {
		return cfg, fmt.Errorf("update.window: %w", err)
	}
	return cfg, nil
}

// tasksConfig translates the config file's tasks section for the local
// runner.
func tasksConfig(d datadir.Dir, t datadir.TasksSection) tasks.Config {
	return tasks.Config{
		ContainerdSocket: t.ContainerdSocket,
		Namespace:        t.Namespace,
		LogStoreCapBytes: t.LogStoreCapMiB << 20,
		Dir:              d.Path("tasks"),
		LayersDir:        d.Path("layers"),
		Policy:           taskPolicy(t),
	}
}

// delegationConfig translates the config file's tasks section for
// delegation: who may submit here, and how long tasks are remembered.
func delegationConfig(t datadir.TasksSection) delegation.Config {
	var from []peer.ID
	for _, s := range t.AcceptFrom {
		if id, err := peer.Decode(s); err == nil { // checked by the file's validation
			from = append(from, id)
		}
	}
	return delegation.Config{
		AcceptRemote:     t.AcceptRemote,
		AcceptFrom:       from,
		LostAfter:        t.LostAfter.Duration,
		KeepTasks:        t.KeepTasks,
		KeepFor:          t.KeepFor.Duration,
		LogStoreCapBytes: t.LogStoreCapMiB << 20,
		Policy:           taskPolicy(t),
		MaxTasksPerPeer:  t.MaxTasksPerPeer,
	}
}

// browserConfig translates the config file's browser section. Chromium
// runs as another uid, which cannot enter the data dir: its own files live
// under the system's temp dir, named after the data dir so that two peers
// of one machine never share them.
func browserConfig(d datadir.Dir, b datadir.BrowserSection) browser.Config {
	sum := sha256.Sum256([]byte(d.Root))
	cfg := browser.DefaultConfig(filepath.Join(os.TempDir(), "cortex-browser-"+hex.EncodeToString(sum[:6])), d.Path("browser/tmp"))
	cfg.Warm = b.Warm
	cfg.AcceptRemote = b.AcceptRemote
	for _, s := range b.AcceptFrom {
		if id, err := peer.Decode(s); err == nil { // checked by the file's validation
			cfg.AcceptFrom = append(cfg.AcceptFrom, id)
		}
	}
	cfg.Origins = browser.OriginPolicy{Allowed: b.AllowedOrigins, Blocked: b.BlockedOrigins}
	cfg.PersistentProfiles = b.PersistentProfiles
	br := &cfg.Bridge
	br.ExecPath, br.UID, br.GID = b.ExecPath, b.UID, b.UID
	br.MaxSessions = b.MaxSessions
	br.IdleTTL, br.NavigateTimeout = b.IdleTTL.Duration, b.NavigateTimeout.Duration
	br.SnapshotBudget = b.SnapshotBudget
	br.MaxTabs, br.MaxMemoryBytes = b.MaxTabs, b.MaxMemoryMiB<<20
	if b.PersistentProfiles {
		br.ProfilesDir = d.Path("browser/profiles")
	}
	return cfg
}

// lspConfig places the language servers' files. They run as another uid,
// which cannot enter the data dir: their views of the workspaces live under
// the system's temp dir, and their caches under /var/tmp, which outlives a
// reboot, so that a restarted server is warm fast.
func lspConfig(d datadir.Dir, l datadir.LSPSection) lsp.Config {
	sum := sha256.Sum256([]byte(d.Root))
	name := "cortex-lsp-" + hex.EncodeToString(sum[:6])
	cfg := lsp.DefaultConfig(filepath.Join(os.TempDir(), name), d.Path("lsp/tmp"), filepath.Join("/var/tmp", name))
	cfg.AcceptRemote = l.AcceptRemote
	for _, s := range l.AcceptFrom {
		if id, err := peer.Decode(s); err == nil { // checked by the file's validation
			cfg.AcceptFrom = append(cfg.AcceptFrom, id)
		}
	}
	b := &cfg.Bridge
	b.UID, b.GID = l.UID, l.UID
	b.IdleTimeout, b.InitTimeout = l.IdleTimeout.Duration, l.InitTimeout.Duration
	b.MaxServers, b.MaxMemoryBytes = l.MaxServers, l.MaxMemoryMiB<<20
	for name, s := range l.Servers {
		b.Servers[name] = bridge.ServerConfig{Command: s.Command, Languages: s.Languages, Patterns: s.Patterns, InitOptions: s.InitOptions}
	}
	return cfg
}

// taskPolicy is the limits and defaults the tasks section sets.
func taskPolicy(t datadir.TasksSection) runtime.Policy {
	return runtime.Policy{
		DefaultImage: t.DefaultImage,
		DefaultLimits: runtime.Limits{
			MemoryBytes: t.DefaultMemoryMiB << 20, CPUs: t.DefaultCPUs, Pids: t.DefaultPids,
			TmpBytes: t.DefaultTmpMiB << 20, DiskBytes: t.DefaultDiskMiB << 20,
			OpenFiles: runtime.DefaultPolicy().DefaultLimits.OpenFiles,
		},
		MaxLimits: runtime.Limits{
			MemoryBytes: t.MaxMemoryMiB << 20, CPUs: t.MaxCPUs, Pids: t.MaxPids,
			TmpBytes: t.MaxTmpMiB << 20, DiskBytes: t.MaxDiskMiB << 20,
			OpenFiles: runtime.DefaultPolicy().MaxLimits.OpenFiles,
		},
		DefaultTimeout: t.DefaultTimeout.Duration,
		MaxTimeout:     t.MaxTimeout.Duration,
		DefaultUID:     t.DefaultUID,
		AllowHostNet:   t.AllowHostNetwork,
		AllowGVisor:    t.AllowGVisor,
		AllowRoot:      t.AllowRoot,
	}
}

// Validate checks the whole config.
func (c Config) Validate() error {
	if err := c.P2P.Validate(); err != nil {
		return err
	}
	if err := c.Store.Validate(); err != nil {
		return err
	}
	if c.MCPListen != "" {
		if err := mcpserver.CheckListenAddr(c.MCPListen); err != nil {
			return err
		}
	}
	if err := errors.Join(c.API.Validate(), c.Exchange.Validate(), c.Tasks.Validate(), c.Delegation.Validate(), c.Browser.Validate(), c.LSP.Validate(), c.Artifacts.Validate()); err != nil {
		return err
	}
	if c.Dir.Root == "" || c.KnownPeersInterval <= 0 {
		return fmt.Errorf("node config: data dir and known-peers interval are required: %w", errdefs.ErrInvalid)
	}
	return nil
}

// NewLogger builds the process logger from the config file's log section.
func NewLogger(w interface{ Write([]byte) (int, error) }, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// exchangeConfig is the exchange's configuration under the file's limits.
func exchangeConfig(l datadir.LimitsSection) exchange.Config {
	c := exchange.DefaultConfig()
	c.ServeBytesPerSecond = l.ServeBytesPerSecond
	return c
}
