package handlers

import (
	"errors"
	"sync"
	"time"
)

// watchdog bounds one attempt in time. Until the first byte reaches the
// client, attempt_timeout (for the response headers) and the deadline
// apply: an attempt that runs out is abandoned, which the call then treats
// as a retryable timeout. Once the headers are in, idle_timeout applies
// too, for as long as the response lasts: a response that goes silent is
// abandoned if nothing has reached the client, and otherwise cut, with its
// upstream request cancelled.
//
// One timer serves all three; each time it fires, the call's watch checks
// the attempt and says when to look again.
//
// The timer is made once and reset for every attempt of every call the
// watchdog serves. A callback that was already running when its attempt
// stopped may then check the next attempt: that does no harm, as the check
// acts only on an attempt that is due and otherwise sets the timer to the
// time it would have been set to anyway.
type watchdog struct {
	c       *call
	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// errSilent is why an attempt was ended for idle_timeout.
var errSilent = errors.New("the upstream sent nothing for longer than idle_timeout")

// arm starts watching an attempt of c, first looking after d.
func (w *watchdog) arm(c *call, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c, w.stopped = c, false
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire)
		return
	}
	w.timer.Reset(d)
}

// fire checks the attempt and arms the timer again if need be.
func (w *watchdog) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if next := w.c.watch(time.Now()); next > 0 {
		w.timer.Reset(next)
	}
}

// poke has the attempt checked at once, when a change of state may bring
// the next check forward (the response headers arriving, with
// idle_timeout or attempt_timeout set). It is safe from the proxy's
// goroutine while the timer runs.
func (w *watchdog) poke() {
	if w == nil || !w.c.watchHeaders {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.timer.Reset(0)
	}
}

// stop ends the watch. A callback that is running holds the lock, so once
// stop returns none will act again on this attempt, and the call may be
// reused. Calling it again does nothing more.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped = true
	w.timer.Stop()
}

// watch is the watchdog's check of the current attempt at now. It abandons
// an attempt that ran out of time before reaching the client, cuts a
// response that went silent after, and returns how long until it should
// look again (0: never).
func (c *call) watch(now time.Time) time.Duration {
	aw := &c.aw
	idle := c.g.cfg.idleTimeout
	switch aw.state.Load() {
	case statePending:
		if now.Before(c.headersBy) {
			return c.headersBy.Sub(now)
		}
		if aw.abandon() {
			aw.cancel()
		}
	case stateHeld, stateHeaded:
		due, silent := c.deadline, false
		if idle > 0 {
			if at := aw.lastByte().Add(idle); at.Before(due) {
				due, silent = at, true
			}
		}
		if now.Before(due) {
			return due.Sub(now)
		}
		if aw.abandon() {
			aw.silent.Store(silent)
			aw.cancel()
		}
	case stateCommitted:
		if idle <= 0 {
			return 0
		}
		if aw.writing.Load() {
			return idle // a slow client is no silence of the upstream
		}
		if due := aw.lastByte().Add(idle); now.Before(due) {
			return due.Sub(now)
		}
		aw.silent.Store(true)
		aw.cancel() // the proxy's read fails, and it aborts the response
	}
	return 0
}
