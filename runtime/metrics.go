package runtime

import (
	"fmt"
	"strings"

	cg1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"
)

// The type URLs under which a shim reports cgroup statistics.
const (
	metricsV1 = "io.containerd.cgroups.v1.Metrics"
	metricsV2 = "io.containerd.cgroups.v2.Metrics"
)

// usage is what a task's cgroup says about it once it has exited.
type usage struct {
	CPUSeconds      float64
	PeakMemoryBytes uint64 // 0 where the cgroup version does not keep it
	OOMKills        uint64
}

// parseMetrics reads a shim's metrics (cgroup v1 or v2 statistics).
func parseMetrics(m *types.Metric) (usage, error) {
	if m == nil || m.Data == nil {
		return usage{}, fmt.Errorf("no metrics data")
	}
	url := strings.TrimPrefix(m.Data.GetTypeUrl(), "type.googleapis.com/")
	switch url {
	case metricsV1:
		var s cg1.Metrics
		if err := proto.Unmarshal(m.Data.GetValue(), &s); err != nil {
			return usage{}, fmt.Errorf("decode %s: %w", url, err)
		}
		return usage{
			CPUSeconds:      float64(s.GetCPU().GetUsage().GetTotal()) / 1e9,
			PeakMemoryBytes: s.GetMemory().GetUsage().GetMax(),
			OOMKills:        s.GetMemoryOomControl().GetOomKill(),
		}, nil
	case metricsV2:
		var s cg2.Metrics
		if err := proto.Unmarshal(m.Data.GetValue(), &s); err != nil {
			return usage{}, fmt.Errorf("decode %s: %w", url, err)
		}
		return usage{
			CPUSeconds: float64(s.GetCPU().GetUsageUsec()) / 1e6,
			OOMKills:   s.GetMemoryEvents().GetOomKill(),
		}, nil
	}
	return usage{}, fmt.Errorf("unknown metrics type %q", url)
}
