package fleet

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// admissionBatch sends the admission scripts of concurrent requests to the
// store together, in one pipeline: one write and one read for many
// requests instead of a pooled connection, a write and a read each. The
// system calls and the pool were most of what a fleet admission cost the
// gateway under load (a profile at 32 connections: about 20 µs of its CPU
// per admission, two thirds of it in go-redis's connection handling and
// the socket calls).
//
// It is a group commit: a request that finds no batch on its way sends its
// own at once, so a request alone waits no longer than before; requests
// that come while a batch is on its way queue for the next one, which the
// first of them sends when the batch before returns. Nothing waits for a
// batch to fill, and no goroutine sits between a request and the store.
type admissionBatch struct {
	mu      sync.Mutex
	sending bool         // a batch is on its way to the store
	next    []*admission // the requests of the next batch
	send    func([]*admission)
}

// admission is one request's call of the admission script.
type admission struct {
	keys []string
	args []any
	out  []int64
	err  error
	// turn receives, once the batch the admission was in has returned,
	// false; or true when the admission is to send the next batch.
	turn chan bool
}

var admissions = sync.Pool{New: func() any { return &admission{turn: make(chan bool, 1)} }}

// do runs a, in a batch with whatever else is waiting, and returns when
// its out and err are set.
func (b *admissionBatch) do(a *admission) {
	b.mu.Lock()
	b.next = append(b.next, a)
	if b.sending {
		b.mu.Unlock()
		if lead := <-a.turn; !lead {
			return
		}
		b.mu.Lock()
	}
	b.sending = true
	batch := b.next
	b.next = nil
	b.mu.Unlock()
	// Deferred, so that a send that panics still frees the others: an
	// admission with no reply counts as the store's failure.
	defer b.handOff(a, batch)
	b.send(batch)
}

// handOff, once the batch sent by a has returned, passes the turn to the
// first admission of the next batch, if any, and frees the batch's others.
func (b *admissionBatch) handOff(a *admission, batch []*admission) {
	b.mu.Lock()
	if len(b.next) > 0 {
		b.next[0].turn <- true
	} else {
		b.sending = false
	}
	b.mu.Unlock()
	for _, o := range batch {
		if o != a {
			o.turn <- false
		}
	}
}

// sendAdmissions runs the admission script for every admission of batch,
// in one pipeline when there are several, within the store's timeout.
func (s *Store) sendAdmissions(batch []*admission) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if len(batch) == 1 {
		a := batch[0]
		a.out, a.err = admitScript.Run(ctx, s.client, a.keys, a.args...).Int64Slice()
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	pipe := s.client.Pipeline()
	for i, a := range batch {
		cmds[i] = admitScript.EvalSha(ctx, pipe, a.keys, a.args...)
	}
	_, _ = pipe.Exec(ctx) // each command holds its own error
	for i, a := range batch {
		a.out, a.err = cmds[i].Int64Slice()
		if a.err != nil && redis.HasErrorPrefix(a.err, "NOSCRIPT") {
			// The store has lost its scripts (a restart, SCRIPT FLUSH):
			// Run loads the script again.
			a.out, a.err = admitScript.Run(ctx, s.client, a.keys, a.args...).Int64Slice()
		}
	}
}
