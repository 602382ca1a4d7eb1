package fleet

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// TestAdmissionBatchGroupsWaiters runs many admissions at once through a
// batch whose store takes a while: each gets its own answer, exactly once;
// the ones that came while a batch was away went together in later
// batches; and one batch is away at a time.
func TestAdmissionBatchGroupsWaiters(t *testing.T) {
	const n = 200
	var (
		away, batches, sent atomic.Int32
		sizes               sync.Map
	)
	b := admissionBatch{send: func(batch []*admission) {
		if away.Add(1) != 1 {
			t.Error("two batches were away at once")
		}
		batches.Add(1)
		sizes.Store(len(batch), true)
		time.Sleep(2 * time.Millisecond)
		for _, a := range batch {
			a.out = append(a.out[:0], a.args[0].(int64))
			sent.Add(1)
		}
		away.Add(-1)
	}}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a := &admission{args: []any{int64(i)}, turn: make(chan bool, 1)}
			b.do(a)
			if len(a.out) != 1 || a.out[0] != int64(i) {
				t.Errorf("admission %d got %v", i, a.out)
			}
		})
	}
	wg.Wait()
	if sent.Load() != n {
		t.Errorf("%d admissions sent, want %d", sent.Load(), n)
	}
	grouped := false
	sizes.Range(func(k, _ any) bool {
		grouped = grouped || k.(int) > 1
		return true
	})
	if got := batches.Load(); got >= n || !grouped {
		t.Errorf("%d batches for %d admissions, none of several: nothing was grouped", got, n)
	}
	if b.sending || len(b.next) != 0 {
		t.Errorf("after the last batch: sending %v, %d waiting", b.sending, len(b.next))
	}
}

// TestConcurrentAdmissionsAreExact sends many admissions at once to a real
// redis-server, where they go in pipelined batches: a zone of 100 requests
// a minute admits 100 of 300 and refuses the rest, as one at a time would.
// The second zone's round runs after the store lost its scripts (SCRIPT
// FLUSH, as after a restart): each admission of the first batch then
// loads the script again, and none fails.
func TestConcurrentAdmissionsAreExact(t *testing.T) {
	srv := testredis.Start(t)
	s := newTestStore(t, srv, policy.FallbackLocal)
	for _, name := range []string{"org", "after-flush"} {
		if name == "after-flush" {
			if err := srv.Do("SCRIPT", "FLUSH"); err != nil {
				t.Fatal(err)
			}
		}
		z := zone(t, s, policy.ZoneConfig{Name: name, RPM: 100})
		var admitted, refused atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 300 {
			wg.Go(func() {
				<-start
				if _, _, r := policy.Admit([]policy.Demand{{Zone: z}}, 0, 0, time.Now()); r != nil {
					refused.Add(1)
				} else {
					admitted.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		// A second and a half of refill at most, on a loaded machine:
		// 100/60 a second.
		if a, r := admitted.Load(), refused.Load(); a < 100 || a > 102 || a+r != 300 {
			t.Errorf("%s: admitted %d, refused %d; want 100 (and the refill) of 300", name, a, r)
		}
	}
	if s.lines("fleet store unavailable") != 0 {
		t.Error("the store was marked down")
	}
}

// TestPipelinedAdmissionsAfterScriptFlush sends a batch of several
// admissions to a store that has lost its scripts (SCRIPT FLUSH, as after
// a restart): the pipeline's EVALSHA calls fail with NOSCRIPT, and each
// admission is sent again with the script, so every one is answered.
func TestPipelinedAdmissionsAfterScriptFlush(t *testing.T) {
	srv := testredis.Start(t)
	s := newTestStore(t, srv, policy.FallbackLocal)
	if err := srv.Do("SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	batch := make([]*admission, 3)
	for i := range batch {
		batch[i] = &admission{
			keys: []string{s.keys.zone("flushed", HashKey(string(rune('a'+i))))},
			args: []any{policy.LimitPeriod, policy.MaxDebt, int64(time.Second), int64(-1), int64(0)},
		}
	}
	s.sendAdmissions(batch)
	for i, a := range batch {
		if a.err != nil || checkReply(a.out, 1) != nil || a.out[0] != 1 {
			t.Errorf("admission %d: %v %v, want admitted", i, a.out, a.err)
		}
	}
}
