package protocol

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func validHeartbeat() Heartbeat {
	return Heartbeat{
		PeerID:       []byte("peer-1"),
		Seq:          7,
		SentAt:       time.UnixMilli(1_700_000_000_000),
		StartedAt:    time.UnixMilli(1_700_000_000_000),
		Version:      "v1.2.3",
		Protocols:    Protocols(),
		Labels:       map[string]string{"gpu": "false", "zone": "a"},
		Addrs:        [][]byte{{4, 127, 0, 0, 1}},
		Capabilities: Capabilities{Containerd: true, Gopls: true},
		Capacity:     Capacity{CPUs: 2, MemoryTotalBytes: 1 << 30, RunningTasks: 1},
		Images:       []string{"docker.io/library/golang:1.26"},
	}
}

func TestHeartbeatRoundTrip(t *testing.T) {
	in := validHeartbeat()
	b, err := EncodeHeartbeat(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeHeartbeat(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(out.PeerID) != string(in.PeerID) || out.Seq != in.Seq || out.Version != in.Version ||
		out.Labels["zone"] != "a" || out.Capabilities != in.Capabilities || out.Capacity != in.Capacity ||
		!out.SentAt.Equal(in.SentAt) || len(out.Addrs) != 1 || len(out.Images) != 1 || out.Images[0] != in.Images[0] {
		t.Fatalf("round trip changed the heartbeat:\n in %+v\nout %+v", in, out)
	}
}

func TestDecodeHeartbeatRejects(t *testing.T) {
	big := strings.Repeat("x", 300)
	manyLabels := map[string]string{}
	for i := range 100 {
		manyLabels[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name string
		edit func(*Heartbeat)
		raw  []byte
	}{
		{name: "garbage", raw: []byte{0xff, 0xff, 0xff, 0xff, 0x0f}},
		{name: "oversized", raw: make([]byte, MaxHeartbeatSize+1)},
		{name: "empty", raw: nil},
		{name: "no peer id", edit: func(h *Heartbeat) { h.PeerID = nil }},
		{name: "long label", edit: func(h *Heartbeat) { h.Labels = map[string]string{"k": big} }},
		{name: "empty label key", edit: func(h *Heartbeat) { h.Labels = map[string]string{"": "v"} }},
		{name: "many labels", edit: func(h *Heartbeat) { h.Labels = manyLabels }},
		{name: "many addrs", edit: func(h *Heartbeat) { h.Addrs = make([][]byte, 40) }},
		{name: "empty addr", edit: func(h *Heartbeat) { h.Addrs = [][]byte{{}} }},
		{name: "many images", edit: func(h *Heartbeat) { h.Images = strings.Split(strings.Repeat("a,", 40)+"a", ",") }},
		{name: "long image name", edit: func(h *Heartbeat) { h.Images = []string{big} }},
		{name: "empty image name", edit: func(h *Heartbeat) { h.Images = []string{""} }},
		// peer_id "p", version "\xff": invalid UTF-8 in a string field.
		{name: "bad utf8 version", raw: []byte{0x0a, 0x01, 'p', 0x22, 0x01, 0xff}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if tc.edit != nil {
				h := validHeartbeat()
				tc.edit(&h)
				if _, err := EncodeHeartbeat(h); !errors.Is(err, errdefs.ErrInvalid) {
					t.Errorf("encode: got %v, want ErrInvalid", err)
				}
				// Bypass the encoder's checks to test the decoder alone.
				var err error
				raw, err = protoMarshal(h)
				if err != nil {
					t.Fatal(err)
				}
			}
			if _, err := DecodeHeartbeat(raw); !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func FuzzDecodeHeartbeat(f *testing.F) {
	b, err := EncodeHeartbeat(validHeartbeat())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHeartbeat(data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error not classified as invalid: %v", err)
			}
			return
		}
		// Whatever decodes must encode again within the cap.
		if _, err := EncodeHeartbeat(h); err != nil {
			t.Fatalf("decoded heartbeat does not re-encode: %v", err)
		}
	})
}
