package runtime

import (
	"strings"
	"testing"
)

func TestValidOwner(t *testing.T) {
	for owner, ok := range map[string]bool{
		"a": true, "Peer1": true, "12D3KooWabc": true, "a.b_c-d": true, strings.Repeat("x", 128): true,
		"": false, ".a": false, "_a": false, "-a": false, "bad owner!": false, "a/b": false, "a=b": false,
		strings.Repeat("x", 129): false, "é": false,
	} {
		if validOwner(owner) != ok {
			t.Errorf("validOwner(%q) = %v, want %v", owner, !ok, ok)
		}
	}
}
