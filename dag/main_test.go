package dag

import (
	"testing"

	"go.uber.org/goleak"
)

// Imports scan and hash on goroutines of their own, and fetches and GC run
// alongside badger's: none may outlive its call or its store.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
