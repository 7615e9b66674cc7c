package runtime

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Exit codes of a task whose program could not be executed, as a shell
// (and docker) reports them.
const (
	ExitNotFound      = 127
	ExitNotExecutable = 126
)

// ExecError is a task whose program could not be executed: runc checks the
// program before the container's process starts, so there is no process
// and no exit status, only an error. Callers report it as the task ending
// with ExitCode, the way a shell reports `nosuchcmd`.
type ExecError struct {
	Program  string // as the task named it (argv[0])
	NotFound bool   // else it exists but cannot be executed
}

func (e *ExecError) Error() string {
	if e.NotFound {
		return "executable file not found: " + e.Program
	}
	return "permission denied: cannot execute " + e.Program
}

// ExitCode is what a shell would exit with: 127 or 126.
func (e *ExecError) ExitCode() int {
	if e.NotFound {
		return ExitNotFound
	}
	return ExitNotExecutable
}

// Unwrap classifies the error: the spec names a program the image lacks.
func (e *ExecError) Unwrap() error {
	if e.NotFound {
		return errdefs.ErrNotFound
	}
	return errdefs.ErrPermissionDenied
}

// execReports match how runc and runsc report a failed exec, which reaches
// us only as text (containerd passes it on with code "unknown"). Matching
// text is the only way, as in docker's daemon; each pattern is anchored to
// the exec step, so a missing working directory or mount source is not
// taken for a missing program. Group 1 is the program (quoted, when it
// starts with a quote), group 2 the reason.
var execReports = []*regexp.Regexp{
	// runc: `exec: "nosuchcmd": executable file not found in $PATH`,
	// `exec: "/no/such": stat /no/such: no such file or directory`,
	// `exec: "/etc": permission denied`.
	regexp.MustCompile(`exec: ("(?:[^"\\]|\\.)*"): (.*)`),
	// runsc: `error finding executable "nosuchcmd" in PATH [/bin]: no such file or directory`.
	regexp.MustCompile(`error finding executable ("(?:[^"\\]|\\.)*") in PATH .*?\]: (.*)`),
	// runsc: `creating process: failed to load /etc/passwd: permission denied`.
	regexp.MustCompile(`creating process: failed to load (.+?): (no such file or directory|permission denied)`),
}

// execError returns the ExecError err reports, or nil.
func execError(err error) *ExecError {
	msg := err.Error()
	for _, re := range execReports {
		m := re.FindStringSubmatch(msg)
		if m == nil {
			continue
		}
		prog := m[1]
		if strings.HasPrefix(prog, `"`) {
			var uerr error
			if prog, uerr = strconv.Unquote(prog); uerr != nil {
				return nil
			}
		}
		switch why := m[2]; {
		case strings.Contains(why, "executable file not found"), strings.Contains(why, "no such file or directory"):
			return &ExecError{Program: prog, NotFound: true}
		case strings.Contains(why, "permission denied"):
			return &ExecError{Program: prog}
		}
		return nil
	}
	return nil
}

// classifyExec is classify for the steps that execute the task's program.
func classifyExec(what string, err error) error {
	if xe := execError(err); xe != nil {
		return fmt.Errorf("%s: %w", what, xe)
	}
	return classify(what, err)
}
