package policy

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// stateOf returns the stored state of key in z, and whether it is tracked.
func stateOf(z *Zone, key string) (keyState, bool) {
	s := z.store
	_, h, sh := s.locate(key, s.epoch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.index[h]
	if !ok {
		return keyState{}, false
	}
	return sh.slots[i].keyState, true
}

// levelAt returns key's state in z as seen at now: a bucket full at any
// instant up to now is full at now, so those instants all read as now. Two
// states with the same levelAt hold exactly the same tokens.
func levelAt(z *Zone, key string, now time.Time) keyState {
	t := int64(now.Sub(z.store.epoch))
	st, ok := stateOf(z, key)
	if !ok {
		return keyState{t, t}
	}
	return keyState{max(st.requests, t), max(st.tokens, t)}
}

// TestAdmitBurst sends a burst of 2N at one instant against `rpm N`: N go, and
// the first refusal tells the client to come back after one request's refill.
func TestAdmitBurst(t *testing.T) {
	const n = 50
	z, _ := newTestZone(t, ZoneConfig{Name: "org", RPM: n})
	t0 := time.Now()
	demands := []Demand{{Zone: z}}
	admitted := 0
	var first *Refusal
	for range 2 * n {
		_, delay, refusal := Admit(demands, 0, time.Minute, t0)
		switch {
		case refusal == nil && delay != 0:
			t.Fatalf("admitted with delay %v in a zone without wait", delay)
		case refusal == nil:
			admitted++
		case first == nil:
			first = refusal
		}
	}
	if admitted != n {
		t.Errorf("burst of %d admitted %d, want %d", 2*n, admitted, n)
	}
	want := Refusal{Zone: "org", Retry: time.Minute / n, Status: ZoneStatus{
		RequestsLimit: n, RequestsReset: time.Minute,
	}}
	if first == nil || *first != want {
		t.Errorf("first refusal = %+v, want %+v", first, want)
	}
}

// TestAdmitBurstWithRefill spreads 2N arrivals over 10 s: the zone admits its
// capacity plus the refill during the burst, never more.
func TestAdmitBurstWithRefill(t *testing.T) {
	const n = 120 // two a second
	z, _ := newTestZone(t, ZoneConfig{RPM: n})
	t0 := time.Now()
	admitted := 0
	for i := range 2 * n {
		at := t0.Add(time.Duration(i) * 10 * time.Second / (2 * n))
		if _, _, refusal := Admit([]Demand{{Zone: z}}, 0, 0, at); refusal == nil {
			admitted++
		}
	}
	if want := n + 20; admitted < want-1 || admitted > want {
		t.Errorf("admitted %d, want %d: capacity %d plus 20 refilled in 10 s", admitted, want, n)
	}
}

// TestAdmitQueuesInArrivalOrder checks `wait`: once the bucket is empty,
// requests queue in order of arrival, each one refill behind the previous,
// until the next would wait longer than the zone allows.
func TestAdmitQueuesInArrivalOrder(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{RPM: 60, Wait: 5 * time.Second})
	t0 := time.Now()
	demands := []Demand{{Zone: z}}
	for range 60 {
		if _, delay, refusal := Admit(demands, 0, time.Minute, t0); refusal != nil || delay != 0 {
			t.Fatalf("within capacity: delay %v, refusal %+v", delay, refusal)
		}
	}
	for i := 1; i <= 5; i++ {
		_, delay, refusal := Admit(demands, 0, time.Minute, t0)
		if refusal != nil || delay != time.Duration(i)*time.Second {
			t.Fatalf("queued request %d: delay %v, refusal %+v; want %ds", i, delay, refusal, i)
		}
	}
	_, _, refusal := Admit(demands, 0, time.Minute, t0)
	if refusal == nil || refusal.Retry != 6*time.Second || refusal.Never {
		t.Fatalf("sixth in the queue: %+v, want refused with Retry 6s", refusal)
	}
	// A request arriving later queues behind the earlier ones: 3 s on, the
	// queue still reaches 5 s past the start, so it waits until t0+6s.
	if _, delay, _ := Admit(demands, 0, time.Minute, t0.Add(3*time.Second)); delay != 3*time.Second {
		t.Errorf("later arrival waits %v, want 3s", delay)
	}
}

// TestAdmitMaxWait checks that the caller's bound (max_wait, deadline) caps a
// zone's longer wait.
func TestAdmitMaxWait(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{RPM: 60, Wait: 10 * time.Second})
	t0 := time.Now()
	demands := []Demand{{Zone: z}}
	for range 60 {
		Admit(demands, 0, 0, t0)
	}
	for i := 1; i <= 2; i++ {
		if _, delay, refusal := Admit(demands, 0, 2*time.Second, t0); refusal != nil || delay != time.Duration(i)*time.Second {
			t.Fatalf("queued %d: delay %v refusal %+v", i, delay, refusal)
		}
	}
	if _, _, refusal := Admit(demands, 0, 2*time.Second, t0); refusal == nil || refusal.Retry != 3*time.Second {
		t.Fatalf("beyond max wait: %+v, want refused with Retry 3s", refusal)
	}
	if _, _, refusal := Admit(demands, 0, -time.Second, t0); refusal == nil {
		t.Fatal("a negative max wait must refuse any wait")
	}
}

// TestAdmitRetry checks that Retry is the time until enough tokens have
// refilled for this request, and that the request fits then.
func TestAdmitRetry(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{TPM: 6000}) // 100 tokens a second
	t0 := time.Now()
	demands := []Demand{{Zone: z, Key: "team"}}
	if _, _, refusal := Admit(demands, 5000, 0, t0); refusal != nil {
		t.Fatal(refusal)
	}
	_, _, refusal := Admit(demands, 3000, 0, t0)
	if refusal == nil || refusal.Retry != 20*time.Second {
		t.Fatalf("refusal %+v, want Retry 20s (2000 tokens short at 100/s)", refusal)
	}
	if refusal.Status.TokensLimit != 6000 || refusal.Status.TokensRemaining != 1000 || refusal.Status.TokensReset != 50*time.Second {
		t.Errorf("refusal status %+v", refusal.Status)
	}
	if _, _, refusal := Admit(demands, 3000, 0, t0.Add(20*time.Second-time.Millisecond)); refusal == nil {
		t.Error("admitted before Retry")
	}
	if _, delay, refusal := Admit(demands, 3000, 0, t0.Add(20*time.Second)); refusal != nil || delay != 0 {
		t.Errorf("at Retry: delay %v, refusal %+v", delay, refusal)
	}
}

// TestAdmitNever checks the request larger than a zone's whole token bucket:
// refused for good, before any bucket is touched, even in other zones.
func TestAdmitNever(t *testing.T) {
	a, _ := newTestZone(t, ZoneConfig{Name: "a", RPM: 100})
	b, _ := newTestZone(t, ZoneConfig{Name: "b", TPM: 1000})
	t0 := time.Now()
	_, _, refusal := Admit([]Demand{{Zone: a}, {Zone: b}}, 1001, time.Minute, t0)
	if refusal == nil || !refusal.Never || refusal.Zone != "b" || refusal.Retry != 0 {
		t.Fatalf("refusal %+v, want Never from b", refusal)
	}
	if refusal.Status.TokensLimit != 1000 || refusal.Status.TokensRemaining != 1000 {
		t.Errorf("refusal status %+v, want b's full bucket", refusal.Status)
	}
	if _, ok := stateOf(a, ""); ok {
		t.Error("zone a was touched by a request b refuses for good")
	}
	if _, _, refusal := Admit([]Demand{{Zone: a}, {Zone: b}}, 1000, 0, t0); refusal != nil {
		t.Errorf("a request of exactly the capacity is refused: %+v", refusal)
	}
	// An empty bucket refuses a fitting request with a Retry, not Never.
	if _, _, refusal := Admit([]Demand{{Zone: b}}, 1000, 0, t0); refusal == nil || refusal.Never {
		t.Errorf("empty bucket: %+v, want a retryable refusal", refusal)
	}
}

// TestAdmitAllOrNothing has the second of two zones refuse: the first zone's
// state is exactly what it was.
func TestAdmitAllOrNothing(t *testing.T) {
	a, _ := newTestZone(t, ZoneConfig{Name: "a", RPM: 100, TPM: 100_000})
	b, _ := newTestZone(t, ZoneConfig{Name: "b", TPM: 1000})
	t0 := time.Now()
	if _, _, refusal := Admit([]Demand{{Zone: a, Key: "org"}}, 12_345, 0, t0); refusal != nil {
		t.Fatal(refusal)
	}
	if _, _, refusal := Admit([]Demand{{Zone: b, Key: "team"}}, 1000, 0, t0); refusal != nil {
		t.Fatal(refusal)
	}
	now := t0.Add(1500 * time.Millisecond)
	before := levelAt(a, "org", now)
	statusBefore := a.store.Status("org", now)
	_, _, refusal := Admit([]Demand{{Zone: a, Key: "org"}, {Zone: b, Key: "team"}}, 500, 0, now)
	if refusal == nil || refusal.Zone != "b" {
		t.Fatalf("refusal %+v, want one from b", refusal)
	}
	if after := levelAt(a, "org", now); after != before {
		t.Errorf("zone a changed by a refused request: %+v, was %+v", after, before)
	}
	if st := a.store.Status("org", now); st != statusBefore {
		t.Errorf("zone a status %+v, was %+v", st, statusBefore)
	}
}

func TestAdmissionCancel(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{RPM: 10, TPM: 10_000})
	t0 := time.Now()
	demands := []Demand{{Zone: z, Key: "k"}}
	Admit(demands, 2000, 0, t0) // some history, so the state is not just "full"
	now := t0.Add(3 * time.Second)
	before := levelAt(z, "k", now)
	a, _, refusal := Admit(demands, 700, 0, now)
	if refusal != nil {
		t.Fatal(refusal)
	}
	a.Cancel(now)
	if after := levelAt(z, "k", now); after != before {
		t.Errorf("cancel left %+v, want %+v", after, before)
	}
	a.Cancel(now) // a second cancel gives nothing more back
	if after := levelAt(z, "k", now); after != before {
		t.Errorf("second cancel left %+v, want %+v", after, before)
	}
	a.Settle(5000, now) // settling a cancelled request changes nothing
	if after := levelAt(z, "k", now); after != before {
		t.Errorf("settle after cancel left %+v, want %+v", after, before)
	}
	// Cancel after Settle: the request went; nothing is given back.
	b, _, _ := Admit(demands, 700, 0, now)
	b.Settle(100, now)
	settled := levelAt(z, "k", now)
	b.Cancel(now)
	if after := levelAt(z, "k", now); after != settled {
		t.Errorf("cancel after settle changed the state")
	}
	// Cancelling the zero Admission of a refusal is harmless.
	var zero Admission
	zero.Cancel(now)
	zero.Settle(10, now)
}

// TestAdmissionCancelWhileQueued lets a queued request leave: the next
// arrival takes the capacity it gave back.
func TestAdmissionCancelWhileQueued(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{RPM: 60, Wait: 10 * time.Second})
	t0 := time.Now()
	demands := []Demand{{Zone: z}}
	for range 60 {
		Admit(demands, 0, time.Minute, t0)
	}
	queued, delay, _ := Admit(demands, 0, time.Minute, t0)
	if delay != time.Second {
		t.Fatalf("queued delay %v, want 1s", delay)
	}
	queued.Cancel(t0.Add(100 * time.Millisecond))
	if _, delay, _ := Admit(demands, 0, time.Minute, t0.Add(100*time.Millisecond)); delay != 900*time.Millisecond {
		t.Errorf("next arrival waits %v, want 900ms (the cancelled one's turn)", delay)
	}
}

func TestAdmissionSettle(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{TPM: 6000}) // 100 tokens a second
	t0 := time.Now()
	demands := []Demand{{Zone: z}}
	a, _, _ := Admit(demands, 5000, 0, t0)
	if st := a.Status(t0); st.TokensRemaining != 1000 {
		t.Fatalf("after reserving 5000: %d left", st.TokensRemaining)
	}
	a.Settle(1000, t0) // used less than reserved: refund 4000
	if st := a.Status(t0); st.TokensRemaining != 5000 || st.TokensReset != 10*time.Second {
		t.Errorf("after settling to 1000: %+v, want 5000 left, full in 10s", st)
	}
	a.Settle(2000, t0) // a newer total: charge 1000 more
	if st := a.Status(t0); st.TokensRemaining != 4000 {
		t.Errorf("after settling to 2000: %d left, want 4000", st.TokensRemaining)
	}
	// Usage far above the reservation takes the bucket below zero, and the
	// next request waits for the debt.
	b, _, _ := Admit(demands, 100, 0, t0)
	b.Settle(7900, t0) // 2000 + 7900 = 9900 used of 6000
	if st := b.Status(t0); st.TokensRemaining != 0 || st.TokensReset != 99*time.Second {
		t.Errorf("after overuse: %+v, want 0 left, full in 99s", st)
	}
	_, _, refusal := Admit(demands, 100, 0, t0)
	if refusal == nil || refusal.Retry != 40*time.Second {
		t.Errorf("after overuse: %+v, want refused with Retry 40s (3900 + 100 tokens at 100/s)", refusal)
	}
	// A negative total is taken as zero.
	c, _, _ := Admit([]Demand{{Zone: z, Key: "other"}}, 600, 0, t0)
	c.Settle(-5, t0)
	if st := c.Status(t0); st.TokensRemaining != 6000 {
		t.Errorf("settled to -5: %d left, want the whole 6000", st.TokensRemaining)
	}
}

// TestSettlementFreesCapacity is built so that the second request fits only
// because the first settled below its reservation.
func TestSettlementFreesCapacity(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{TPM: 10_000})
	t0 := time.Now()
	demands := []Demand{{Zone: z}}
	a, _, _ := Admit(demands, 8000, 0, t0)
	if _, _, refusal := Admit(demands, 5000, 0, t0); refusal == nil {
		t.Fatal("5000 tokens admitted with 2000 left")
	}
	a.Settle(1000, t0)
	if _, _, refusal := Admit(demands, 5000, 0, t0); refusal != nil {
		t.Errorf("after settling to 1000 (9000 left): %+v", refusal)
	}
}

// TestAdmissionStatus checks that success headers describe the tightest zone,
// per dimension.
func TestAdmissionStatus(t *testing.T) {
	a, _ := newTestZone(t, ZoneConfig{Name: "a", RPM: 10, TPM: 1000})
	b, _ := newTestZone(t, ZoneConfig{Name: "b", RPM: 100, TPM: 500})
	c, _ := newTestZone(t, ZoneConfig{Name: "c", RPM: 1000})
	t0 := time.Now()
	adm, _, refusal := Admit([]Demand{{Zone: a}, {Zone: b, Key: "x"}, {Zone: c}}, 200, 0, t0)
	if refusal != nil {
		t.Fatal(refusal)
	}
	want := ZoneStatus{
		RequestsLimit: 10, RequestsRemaining: 9, RequestsReset: 6 * time.Second, // a
		TokensLimit: 500, TokensRemaining: 300, TokensReset: 24 * time.Second, // b
	}
	if got := adm.Status(t0); got != want {
		t.Errorf("Status = %+v, want %+v", got, want)
	}
	if got := (Admission{}).Status(t0); got != (ZoneStatus{}) {
		t.Errorf("zero Admission status %+v", got)
	}
	// A zone that does not count tokens reports no token limit.
	only, _, _ := Admit([]Demand{{Zone: c}}, 200, 0, t0)
	if got := only.Status(t0); got.TokensLimit != 0 || got.RequestsLimit != 1000 || got.RequestsRemaining != 998 {
		t.Errorf("requests-only zone: %+v", got)
	}
}

// TestAdmitSettleAllocatesNothing is the hot path: one zone, one key.
func TestAdmitSettleAllocatesNothing(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{RPM: 4000, TPM: 4_000_000})
	now := time.Now()
	demands := []Demand{{Zone: z, Key: "team-a"}}
	allocs := testing.AllocsPerRun(1000, func() {
		a, _, refusal := Admit(demands, 1000, time.Second, now)
		if refusal != nil {
			t.Fatal(refusal)
		}
		a.Settle(800, now)
		_ = a.Status(now)
		now = now.Add(20 * time.Millisecond)
	})
	if allocs != 0 {
		t.Errorf("Admit+Settle+Status allocates %.1f times", allocs)
	}
}

// TestAdmitConcurrent runs Admit, Settle and Cancel from many goroutines on
// shared zones (run it with -race). At one instant the counts are exact.
func TestAdmitConcurrent(t *testing.T) {
	global, _ := newTestZone(t, ZoneConfig{Name: "global", RPM: 1000, TPM: 1_000_000})
	perKey, _ := newTestZone(t, ZoneConfig{Name: "team", RPM: 100, MaxKeys: 1000})
	t0 := time.Now()
	const workers = 8
	admitted := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			demands := []Demand{{Zone: global}, {Zone: perKey, Key: fmt.Sprint("team-", w)}}
			for range 300 {
				if _, _, refusal := Admit(demands, 10, 0, t0); refusal == nil {
					admitted[w]++
				}
			}
		})
	}
	wg.Wait()
	for w, n := range admitted {
		if n != 100 {
			t.Errorf("worker %d admitted %d, want its key's 100", w, n)
		}
	}
	if st := global.store.Status("", t0); st.RequestsRemaining != 1000-workers*100 || st.TokensRemaining != 1_000_000-workers*1000 {
		t.Errorf("global zone: %+v, want %d requests and %d tokens left", st, 1000-workers*100, 1_000_000-workers*1000)
	}

	// A random mix over time; everything settles or cancels, and an hour
	// later every bucket is full again.
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 2000 {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				demands := []Demand{{Zone: global}, {Zone: perKey, Key: fmt.Sprint("team-", rng.IntN(50))}}
				a, _, refusal := Admit(demands, rng.Int64N(2000), time.Duration(rng.IntN(3))*time.Second, now)
				if refusal != nil {
					continue
				}
				_ = a.Status(now)
				if rng.IntN(4) == 0 {
					a.Cancel(now)
				} else {
					a.Settle(rng.Int64N(3000), now)
				}
			}
		})
	}
	wg.Wait()
	later := t0.Add(time.Hour)
	for _, k := range []string{"", "team-1"} {
		for _, z := range []*Zone{global, perKey} {
			st := z.store.Status(k, later)
			if st.RequestsRemaining != st.RequestsLimit || st.TokensRemaining != st.TokensLimit {
				t.Errorf("%s %q an hour later: %+v, want full", z.cfg.Name, k, st)
			}
		}
	}
}

// FuzzAdmit runs sequences of Admit, Settle, Cancel and time passing against
// two zones and checks: nothing panics; statuses stay within their limits; a
// Never refusal comes exactly when the tokens exceed a zone's capacity; a
// refused request changes no zone; and the delay respects every bound.
func FuzzAdmit(f *testing.F) {
	f.Add(uint16(10), uint16(1000), uint16(500), []byte{0, 10, 0, 200, 1, 0, 5, 2, 1, 0, 0, 255, 3, 60})
	f.Add(uint16(1), uint16(1), uint16(1), []byte{0, 1, 0, 2, 2, 0, 0, 0, 1})
	f.Add(uint16(0), uint16(100), uint16(0), []byte{0, 50, 0, 50, 0, 50, 3, 1, 0, 101})
	f.Fuzz(func(t *testing.T, rpm, tpmA, tpmB uint16, ops []byte) {
		a, err := NewZone(ZoneConfig{Name: "a", RPM: int64(rpm), TPM: int64(tpmA), Wait: 2 * time.Second})
		if err != nil {
			return
		}
		b, err := NewZone(ZoneConfig{Name: "b", RPM: 1 + int64(rpm)/2, TPM: int64(tpmB), Wait: 5 * time.Second, MaxKeys: 2})
		if err != nil {
			return
		}
		now := time.Now()
		var open []Admission
		for len(ops) >= 2 {
			op, arg := ops[0]%5, int64(ops[1])
			ops = ops[2:]
			demands := []Demand{{Zone: a}, {Zone: b, Key: fmt.Sprint(arg % 3)}}
			switch op {
			case 0, 1: // admit, with a shorter bound on op 1
				tokens := arg * 8
				maxWait := time.Minute
				if op == 1 {
					maxWait = time.Second
				}
				before := [2]ZoneStatus{a.store.Status(demands[0].Key, now), b.store.Status(demands[1].Key, now)}
				adm, delay, refusal := Admit(demands, tokens, maxWait, now)
				tooBig := (tpmA > 0 && tokens > int64(tpmA)) || (tpmB > 0 && tokens > int64(tpmB))
				if (refusal != nil && refusal.Never) != tooBig {
					t.Fatalf("tokens %d, tpm %d/%d: refusal %+v", tokens, tpmA, tpmB, refusal)
				}
				if refusal != nil {
					after := [2]ZoneStatus{a.store.Status(demands[0].Key, now), b.store.Status(demands[1].Key, now)}
					if after != before {
						t.Fatalf("refused request changed the zones: %+v → %+v", before, after)
					}
					if !refusal.Never && refusal.Retry <= 0 {
						t.Fatalf("retryable refusal without a Retry: %+v", refusal)
					}
					continue
				}
				if delay < 0 || delay > maxWait || delay > 5*time.Second {
					t.Fatalf("delay %v beyond its bounds", delay)
				}
				open = append(open, adm)
			case 2: // settle the oldest open admission
				if len(open) > 0 {
					open[0].Settle(arg*16, now)
					open = open[1:]
				}
			case 3: // cancel the newest
				if len(open) > 0 {
					open[len(open)-1].Cancel(now)
					open = open[:len(open)-1]
				}
			case 4:
				now = now.Add(time.Duration(arg) * 100 * time.Millisecond)
			}
			for _, d := range demands {
				st := d.Zone.store.Status(d.Key, now)
				if st.RequestsRemaining < 0 || st.RequestsRemaining > st.RequestsLimit || st.RequestsReset < 0 ||
					st.TokensRemaining < 0 || st.TokensRemaining > st.TokensLimit || st.TokensReset < 0 {
					t.Fatalf("status out of range: %+v", st)
				}
			}
		}
	})
}
