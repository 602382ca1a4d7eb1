//go:build !linux

package testredis

import "os/exec"

// setParentDeath does nothing where the kernel cannot tie a child's life to
// its parent's; the test's cleanup still kills the server.
func setParentDeath(*exec.Cmd) {}
