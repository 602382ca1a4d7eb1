package testredis

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill the server when the test process
// dies, so that a test binary killed by a timeout leaves no server behind.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
