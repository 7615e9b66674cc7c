package cdp

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine of a session, an instance and chromedp ends with
// Browser.Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
