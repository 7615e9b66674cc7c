package tasks_test

import (
	"testing"

	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }
