package lsp

import (
	"bytes"
	"testing"
)

// lineAt finds the lines lines splits, and none past them.
func TestLineAtAgreesWithLines(t *testing.T) {
	for _, content := range []string{"", "\n", "a", "a\n", "a\nb", "a\nb\n", "a\r\nb\r\n", "\n\n", "x\n\ny\n\n"} {
		ls := lines([]byte(content))
		for i := -1; i <= len(ls)+1; i++ {
			got, ok := lineAt([]byte(content), i)
			want := i >= 0 && i < len(ls)
			if ok != want || (ok && !bytes.Equal(got, ls[i])) {
				t.Errorf("lineAt(%q, %d) = %q, %v; want %v", content, i, got, ok, want)
			}
		}
	}
}
