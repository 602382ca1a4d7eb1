package proc

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes the kernel kill cmd's process when this process
// dies, so that a test binary or benchmark killed by a timeout leaves
// nothing behind.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
