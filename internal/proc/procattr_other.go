//go:build !linux

package proc

import "os/exec"

// DieWithParent does nothing where the kernel cannot tie a child's life to
// its parent's; the callers' cleanups still stop their processes.
func DieWithParent(*exec.Cmd) {}
