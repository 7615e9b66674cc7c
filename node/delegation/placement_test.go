package delegation

import (
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestChoose(t *testing.T) {
	caps := protocol.Capabilities{Containerd: true}
	speaks := []string{protocol.TaskProtocol}
	self := candidate{ID: "self", Self: true, Caps: caps, CPUs: 2}
	a := candidate{ID: "a", Caps: caps, Protocols: speaks, CPUs: 2}
	b := candidate{ID: "b", Caps: caps, Protocols: speaks, CPUs: 2}
	with := func(c candidate, edit func(*candidate)) candidate { edit(&c); return c }
	tests := []struct {
		name  string
		p     Placement
		image string
		cands []candidate
		want  peer.ID
	}{
		{name: "self wins a tie", cands: []candidate{a, self, b}, want: "self"},
		{name: "least loaded", cands: []candidate{with(self, func(c *candidate) { c.Running = 2 }), a, b}, want: "a"},
		{name: "holds the workspace", cands: []candidate{
			with(self, func(c *candidate) { c.Running = 1 }),
			with(a, func(c *candidate) { c.Missing = 1 }),
			with(b, func(c *candidate) { c.Missing = 0.1 }),
		}, want: "b"},
		{name: "busy holder loses to an idle peer", cands: []candidate{
			with(a, func(c *candidate) { c.Missing = 1 }),
			with(b, func(c *candidate) { c.Running = 4 }),
		}, want: "a"},
		{name: "holds the image", image: "busybox", cands: []candidate{
			with(a, func(c *candidate) { c.Images = []string{"docker.io/library/alpine:latest"} }),
			with(b, func(c *candidate) { c.Images = []string{"docker.io/library/busybox:latest"} }),
		}, want: "b"},
		{name: "labels first", p: Placement{Labels: map[string]string{"zone": "x"}}, cands: []candidate{
			self, with(a, func(c *candidate) { c.Labels = map[string]string{"zone": "x"}; c.Running = 8 }),
		}, want: "a"},
		{name: "asked-for peer", p: Placement{Peer: "b"}, cands: []candidate{self, a, b}, want: "b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := choose(tc.p, tc.cands, tc.image)
			if err != nil || got.ID != tc.want {
				t.Fatalf("chose %s (%v), want %s", got.ID, err, tc.want)
			}
		})
	}
	_, err := choose(Placement{Require: []string{"gvisor"}}, []candidate{self, a}, "")
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "no gvisor") {
		t.Fatalf("nothing fits: %v", err)
	}
}
