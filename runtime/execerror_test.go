package runtime

import (
	"errors"
	"testing"
)

// The reports of runc and runsc that mean a missing or unexecutable
// program, and others that must not be taken for one.
func TestExecErrorFromReports(t *testing.T) {
	for _, c := range []struct {
		report string
		want   *ExecError
	}{
		{`failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "nosuchcmd": executable file not found in $PATH: unknown`,
			&ExecError{Program: "nosuchcmd", NotFound: true}},
		{`OCI runtime create failed: runc create failed: unable to start container process: exec: "/no/such": stat /no/such: no such file or directory: unknown`,
			&ExecError{Program: "/no/such", NotFound: true}},
		{`runc create failed: unable to start container process: exec: "/etc": permission denied: unknown`,
			&ExecError{Program: "/etc"}},
		{`runc create failed: unable to start container process: exec: "a \"quoted\" name": executable file not found in $PATH: unknown`,
			&ExecError{Program: `a "quoted" name`, NotFound: true}},
		{`OCI runtime start failed: starting container: starting root container: starting sandbox: error finding executable "nosuchcmd" in PATH [/bin /usr/bin]: no such file or directory: unknown`,
			&ExecError{Program: "nosuchcmd", NotFound: true}},
		{`OCI runtime start failed: starting sandbox: creating process: failed to load /no/such/program: no such file or directory: unknown`,
			&ExecError{Program: "/no/such/program", NotFound: true}},
		{`OCI runtime start failed: starting sandbox: creating process: failed to load /etc/passwd: permission denied: unknown`,
			&ExecError{Program: "/etc/passwd"}},
		{`runc create failed: unable to start container process: error during container init: error mounting "/x" to rootfs at "/workspace": stat /x: no such file or directory: unknown`, nil},
		{`runc create failed: unable to start container process: chdir to cwd ("/nope") set in config.json failed: no such file or directory: unknown`, nil},
		{`runc create failed: unable to start container process: exec: "sh": exec format error: unknown`, nil},
	} {
		got := execError(errors.New(c.report))
		if (got == nil) != (c.want == nil) || (got != nil && *got != *c.want) {
			t.Errorf("%s:\n got %#v, want %#v", c.report, got, c.want)
		}
	}
}
