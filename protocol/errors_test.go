package protocol

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestErrorText(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("plain"), "plain"},
		{fmt.Errorf("no space left on the device of /d: %w", errdefs.ErrResourceExhausted), "resource_exhausted: no space left on the device of /d: resource exhausted"},
		{fmt.Errorf("write /d/f: %w", syscall.ENOSPC), "resource_exhausted: write /d/f: no space left on device"},
		// Already prefixed (a result that came over the wire): as it is.
		{fmt.Errorf("resource_exhausted: x: %w", errdefs.ErrResourceExhausted), "resource_exhausted: x: resource exhausted"},
		// ... and joined to what followed from it, of another kind.
		{errors.Join(errors.New("resource_exhausted: x"), fmt.Errorf("y: %w", errdefs.ErrUnavailable)), "resource_exhausted: x\ny: unavailable"},
	} {
		if got := ErrorText(c.err); got != c.want {
			t.Errorf("ErrorText(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
