package apiclient

import (
	"testing"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// run and run_task compare what they received with what the result
// counts, per stream, so that output with a hole never passes for whole.
func TestOutputMissing(t *testing.T) {
	res := &apiv1.TaskResult{StdoutBytes: 100, StderrBytes: 10}
	for _, c := range []struct {
		got  [2]uint64
		want uint64
	}{
		{[2]uint64{100, 10}, 0},
		{[2]uint64{60, 10}, 40},
		{[2]uint64{100, 0}, 10},
		{[2]uint64{110, 0}, 10}, // more on one stream does not make up for the other
	} {
		if got := OutputMissing(res, c.got[0], c.got[1]); got != c.want {
			t.Errorf("received %v: missing %d, want %d", c.got, got, c.want)
		}
	}
}
