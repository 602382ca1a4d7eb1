package proc

import (
	"os/exec"
	"syscall"
	"time"
)

// Child is a started child process whose exit is awaited in the
// background, so that whoever stops it can wait for the end without
// racing another Wait.
type Child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts cmd.
func Start(cmd *exec.Cmd) (*Child, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// Pid returns the process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (c *Child) Exited() <-chan struct{} { return c.exited }

// Stop asks the process to end (SIGTERM, for a graceful shutdown), kills
// it if it has not ended after grace, and waits for it.
func (c *Child) Stop(grace time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		c.Kill()
	}
}

// Kill ends the process at once, as a crash would, and waits for it.
func (c *Child) Kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}
