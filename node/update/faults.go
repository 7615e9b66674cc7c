package update

import (
	"os"
	"syscall"
)

// EnvKillAt names an install step at which the peer kills itself and its
// supervisor with SIGKILL: the tests' way to cut an install at every step.
const EnvKillAt = "CORTEX_TEST_UPDATE_KILL_AT"

// faultPoint kills the process group at the named step when the tests ask.
func faultPoint(step string) {
	if os.Getenv(EnvKillAt) != step {
		return
	}
	_ = syscall.Kill(os.Getppid(), syscall.SIGKILL) // the supervisor
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
