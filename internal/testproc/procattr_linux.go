package testproc

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes the kernel kill cmd's process when the test process
// dies, so that a test binary killed by a timeout leaves nothing behind.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
