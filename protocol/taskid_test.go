package protocol

import (
	"strings"
	"testing"
)

func TestCheckTaskID(t *testing.T) {
	for id, ok := range map[string]bool{
		"a": true, "0": true, "tx3nx2fdo25db7ikf": true, "a-b-c": true, strings.Repeat("a", 64): true,
		"": false, "-a": false, "A": false, "a_b": false, "a.b": false, "a/b": false, "..": false,
		strings.Repeat("a", 65): false, "é": false, "a b": false,
	} {
		if err := CheckTaskID(id); (err == nil) != ok {
			t.Errorf("CheckTaskID(%q) = %v, want ok %v", id, err, ok)
		}
	}
}
