package protocol

import (
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
)

// Bounds on the parts of a heartbeat, checked on decode so that a hostile
// peer cannot make the peer book grow without limit.
const (
	maxLabels      = 64
	maxLabelLen    = 256
	maxProtocols   = 64
	maxProtocolLen = 256
	maxAddrs       = 32
	maxAddrLen     = 512
	maxVersionLen  = 128
	maxPeerIDLen   = 128
	// MaxImages is how many image names a heartbeat may carry.
	MaxImages   = 32
	maxImageLen = 256
)

// Capabilities says what a peer can offer to tasks.
type Capabilities struct {
	Containerd bool `json:"containerd"`
	GVisor     bool `json:"gvisor"`
	Chromium   bool `json:"chromium"`
	Gopls      bool `json:"gopls"`
}

// Names lists the capabilities that are present, in a fixed order.
func (c Capabilities) Names() []string {
	var out []string
	for _, x := range []struct {
		on   bool
		name string
	}{{c.Containerd, "containerd"}, {c.GVisor, "gvisor"}, {c.Chromium, "chromium"}, {c.Gopls, "gopls"}} {
		if x.on {
			out = append(out, x.name)
		}
	}
	return out
}

// Capacity is what a peer has and uses.
type Capacity struct {
	CPUs                 uint32 `json:"cpus"`
	MemoryTotalBytes     uint64 `json:"memory_total_bytes"`
	MemoryAvailableBytes uint64 `json:"memory_available_bytes"`
	RunningTasks         uint32 `json:"running_tasks"`
}

// Heartbeat is a peer's periodic announcement of itself to the mesh.
type Heartbeat struct {
	PeerID       []byte // binary libp2p peer id
	Seq          uint64
	SentAt       time.Time
	StartedAt    time.Time
	Version      string
	Protocols    []string
	Labels       map[string]string
	Addrs        [][]byte // binary multiaddrs
	Capabilities Capabilities
	Capacity     Capacity
	Images       []string // names of the container images the peer holds
	Draining     bool     // the peer takes no new tasks
}

// EncodeHeartbeat serializes h for the heartbeat topic.
func EncodeHeartbeat(h Heartbeat) ([]byte, error) {
	if err := checkHeartbeat(h); err != nil {
		return nil, err
	}
	b, err := proto.Marshal(heartbeatToWire(h))
	if err != nil {
		return nil, fmt.Errorf("encode heartbeat: %w", err)
	}
	if len(b) > MaxHeartbeatSize {
		return nil, fmt.Errorf("encode heartbeat: %d bytes over the cap of %d: %w", len(b), MaxHeartbeatSize, errdefs.ErrResourceExhausted)
	}
	return b, nil
}

// DecodeHeartbeat parses and bounds-checks a heartbeat received from the wire.
// It never panics on any input; errors wrap errdefs.ErrInvalid.
func DecodeHeartbeat(b []byte) (Heartbeat, error) {
	if len(b) > MaxHeartbeatSize {
		return Heartbeat{}, fmt.Errorf("decode heartbeat: %d bytes over the cap of %d: %w", len(b), MaxHeartbeatSize, errdefs.ErrInvalid)
	}
	var w meshv1.Heartbeat
	if err := proto.Unmarshal(b, &w); err != nil {
		return Heartbeat{}, fmt.Errorf("decode heartbeat: %v: %w", err, errdefs.ErrInvalid)
	}
	h := heartbeatFromWire(&w)
	if err := checkHeartbeat(h); err != nil {
		return Heartbeat{}, err
	}
	return h, nil
}

func checkHeartbeat(h Heartbeat) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("heartbeat: "+format+": %w", append(args, errdefs.ErrInvalid)...)
	}
	switch {
	case len(h.PeerID) == 0:
		return bad("no peer id")
	case len(h.PeerID) > maxPeerIDLen:
		return bad("peer id of %d bytes", len(h.PeerID))
	case len(h.Version) > maxVersionLen || !utf8.ValidString(h.Version):
		return bad("bad version string")
	case len(h.Protocols) > maxProtocols:
		return bad("%d protocols, at most %d", len(h.Protocols), maxProtocols)
	case len(h.Labels) > maxLabels:
		return bad("%d labels, at most %d", len(h.Labels), maxLabels)
	case len(h.Addrs) > maxAddrs:
		return bad("%d addresses, at most %d", len(h.Addrs), maxAddrs)
	case len(h.Images) > MaxImages:
		return bad("%d images, at most %d", len(h.Images), MaxImages)
	}
	for _, im := range h.Images {
		if im == "" || len(im) > maxImageLen || !utf8.ValidString(im) {
			return bad("image name %.32q: must be 1..%d bytes of UTF-8", im, maxImageLen)
		}
	}
	for _, p := range h.Protocols {
		if len(p) > maxProtocolLen {
			return bad("protocol id of %d bytes", len(p))
		}
	}
	for k, v := range h.Labels {
		if k == "" || len(k) > maxLabelLen || len(v) > maxLabelLen {
			return bad("label %.32q: key must be 1..%d bytes, value at most %d", k, maxLabelLen, maxLabelLen)
		}
	}
	for _, a := range h.Addrs {
		if len(a) == 0 || len(a) > maxAddrLen {
			return bad("address of %d bytes", len(a))
		}
	}
	return nil
}

func heartbeatToWire(h Heartbeat) *meshv1.Heartbeat {
	return &meshv1.Heartbeat{
		PeerId:          h.PeerID,
		Seq:             h.Seq,
		SentAtUnixMs:    h.SentAt.UnixMilli(),
		StartedAtUnixMs: h.StartedAt.UnixMilli(),
		Version:         h.Version,
		Protocols:       h.Protocols,
		Labels:          h.Labels,
		Addrs:           h.Addrs,
		Images:          h.Images,
		Draining:        h.Draining,
		Capabilities: &meshv1.Capabilities{
			Containerd: h.Capabilities.Containerd,
			Gvisor:     h.Capabilities.GVisor,
			Chromium:   h.Capabilities.Chromium,
			Gopls:      h.Capabilities.Gopls,
		},
		Capacity: &meshv1.Capacity{
			Cpus:                 h.Capacity.CPUs,
			MemoryTotalBytes:     h.Capacity.MemoryTotalBytes,
			MemoryAvailableBytes: h.Capacity.MemoryAvailableBytes,
			RunningTasks:         h.Capacity.RunningTasks,
		},
	}
}

func heartbeatFromWire(w *meshv1.Heartbeat) Heartbeat {
	return Heartbeat{
		PeerID:    w.GetPeerId(),
		Seq:       w.GetSeq(),
		SentAt:    time.UnixMilli(w.GetSentAtUnixMs()),
		StartedAt: time.UnixMilli(w.GetStartedAtUnixMs()),
		Version:   w.GetVersion(),
		Protocols: w.GetProtocols(),
		Labels:    w.GetLabels(),
		Addrs:     w.GetAddrs(),
		Images:    w.GetImages(),
		Draining:  w.GetDraining(),
		Capabilities: Capabilities{
			Containerd: w.GetCapabilities().GetContainerd(),
			GVisor:     w.GetCapabilities().GetGvisor(),
			Chromium:   w.GetCapabilities().GetChromium(),
			Gopls:      w.GetCapabilities().GetGopls(),
		},
		Capacity: Capacity{
			CPUs:                 w.GetCapacity().GetCpus(),
			MemoryTotalBytes:     w.GetCapacity().GetMemoryTotalBytes(),
			MemoryAvailableBytes: w.GetCapacity().GetMemoryAvailableBytes(),
			RunningTasks:         w.GetCapacity().GetRunningTasks(),
		},
	}
}
