package p2p

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config is everything the host needs. Build one with DefaultConfig and
// change what differs.
type Config struct {
	// Version is this build's version, sent in the libp2p user agent.
	Version string
	// Identity is the peer's private key; required.
	Identity crypto.PrivKey
	// MeshKey is the private-network PSK. With it, only holders of the same
	// key can connect. go-libp2p's QUIC transport cannot carry a PSK, so
	// with a mesh key only the TCP listen addresses are used.
	MeshKey pnet.PSK
	// Allowlist, when not empty, is the only set of peers that may connect
	// (enforced after the secure handshake by a connection gater). Without a
	// mesh key an allowlist is required.
	Allowlist []peer.ID
	// ListenAddrs are multiaddrs to listen on; TCP and QUIC.
	ListenAddrs []string
	// Bootstrap are full multiaddrs (with /p2p/ID) dialed at start and
	// re-dialed with backoff while not connected.
	Bootstrap []string
	// MDNS enables local-network discovery.
	MDNS bool
	// DHT enables the mesh's kad-DHT for discovery beyond one LAN.
	DHT bool

	Limits     Limits
	Connection ConnectionLimits
	Heartbeat  HeartbeatConfig

	// BootstrapBackoffMin and Max bound the retry interval of an unreachable
	// bootstrap address.
	BootstrapBackoffMin time.Duration
	BootstrapBackoffMax time.Duration
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
	// PubsubQueueSize is the length of gossipsub's per-peer outbound and
	// validation queues (0: the default, 128). Tests make it small to
	// force drops.
	PubsubQueueSize int
}

// Limits are the resource manager's system-wide limits.
type Limits struct {
	MaxConnections int
	MaxStreams     int
	MaxMemoryBytes int64
	MaxFileDescs   int
}

// ConnectionLimits drive the connection manager: above High connections it
// trims down to Low, sparing connections younger than Grace.
type ConnectionLimits struct {
	Low   int
	High  int
	Grace time.Duration
}

// HeartbeatConfig sets how often a peer announces itself and how long an
// announcement stays valid in others' peer books.
type HeartbeatConfig struct {
	Interval time.Duration
	Expiry   time.Duration
}

// Defaults, named so that logic never carries bare literals.
const (
	DefaultHeartbeatInterval   = 5 * time.Second
	DefaultHeartbeatExpiry     = 3 * DefaultHeartbeatInterval
	DefaultBootstrapBackoffMin = 2 * time.Second
	DefaultBootstrapBackoffMax = 5 * time.Minute
	DefaultDialTimeout         = 10 * time.Second
)

// DefaultConfig returns a config with sane defaults; Identity must be set.
func DefaultConfig() Config {
	return Config{
		// TCP only: the default mesh has a mesh key, which QUIC cannot carry.
		ListenAddrs: []string{"/ip4/0.0.0.0/tcp/4101", "/ip6/::/tcp/4101"},
		MDNS:        true,
		DHT:         true,
		Limits: Limits{
			MaxConnections: 512,
			MaxStreams:     4096,
			MaxMemoryBytes: 256 << 20,
			MaxFileDescs:   1024,
		},
		Connection:          ConnectionLimits{Low: 64, High: 128, Grace: time.Minute},
		Heartbeat:           HeartbeatConfig{Interval: DefaultHeartbeatInterval, Expiry: DefaultHeartbeatExpiry},
		BootstrapBackoffMin: DefaultBootstrapBackoffMin,
		BootstrapBackoffMax: DefaultBootstrapBackoffMax,
		DialTimeout:         DefaultDialTimeout,
	}
}

// Validate reports every problem of the config at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Identity == nil {
		bad("no identity key")
	}
	if c.MeshKey == nil && len(c.Allowlist) == 0 {
		bad("neither a mesh key nor an allowlist: the mesh would be open to anyone")
	}
	if c.MeshKey != nil && len(c.MeshKey) != 32 {
		bad("mesh key is %d bytes, want 32", len(c.MeshKey))
	}
	if len(c.ListenAddrs) == 0 {
		bad("no listen address")
	}
	for _, a := range c.ListenAddrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			bad("listen address %q: %v", a, err)
		}
	}
	for _, a := range c.Bootstrap {
		if _, err := peer.AddrInfoFromString(a); err != nil {
			bad("bootstrap address %q: %v (want a multiaddr ending in /p2p/PEER_ID)", a, err)
		}
	}
	if c.Limits.MaxConnections <= 0 || c.Limits.MaxStreams <= 0 || c.Limits.MaxMemoryBytes <= 0 || c.Limits.MaxFileDescs <= 0 {
		bad("resource limits must be positive: %+v", c.Limits)
	}
	if c.Connection.Low <= 0 || c.Connection.High < c.Connection.Low {
		bad("connection limits: want 0 < low <= high, got low=%d high=%d", c.Connection.Low, c.Connection.High)
	}
	if c.Heartbeat.Interval <= 0 || c.Heartbeat.Expiry <= c.Heartbeat.Interval {
		bad("heartbeat: want 0 < interval < expiry, got interval=%s expiry=%s", c.Heartbeat.Interval, c.Heartbeat.Expiry)
	}
	if c.BootstrapBackoffMin <= 0 || c.BootstrapBackoffMax < c.BootstrapBackoffMin {
		bad("bootstrap backoff: want 0 < min <= max")
	}
	if c.DialTimeout <= 0 {
		bad("dial timeout must be positive")
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("p2p config: %w: %w", errdefs.ErrInvalid, err)
	}
	return nil
}

func (c Config) userAgentVersion() string {
	if c.Version == "" {
		return "dev"
	}
	return c.Version
}
