package fleet

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// instance is one member of a test fleet: a store, and a breaker and a
// hold table that it keeps up to date, as the ai_resilience app does.
type instance struct {
	*testStore
	cb    *policy.CircuitBreaker
	holds *policy.PaceHolds
	// notified are the transitions that reached the breaker from the store.
	mu       sync.Mutex
	notified []policy.Transition
}

// join starts an instance on srv; instances of one test share a prefix.
func join(t testing.TB, srv *testredis.Server, s policy.CircuitSettings) *instance {
	t.Helper()
	in := &instance{testStore: newTestStore(t, srv, policy.FallbackLocal)}
	in.cb = policy.NewFleetCircuitBreaker(s, nil, in.Store)
	in.cb.SetNotify(func(tr policy.Transition) {
		in.mu.Lock()
		in.notified = append(in.notified, tr)
		in.mu.Unlock()
	})
	t.Cleanup(in.WatchCircuits(in.cb))
	in.holds = policy.NewPaceHolds(in.Store)
	t.Cleanup(in.WatchHolds(in.holds))
	return in
}

// state returns the state the instance shows for model.
func (in *instance) state(model string) policy.CircuitState {
	for _, st := range in.cb.Snapshot() {
		if st.Model == model {
			return st.State
		}
	}
	return policy.CircuitClosed
}

// fail makes one attempt through the instance that fails, and reports
// whether the circuit let it through.
func (in *instance) fail(model string) bool {
	p, _ := in.cb.Allow(model)
	in.cb.Record(p, policy.OutcomeFailure)
	return p.Allowed
}

// fleetCircuit opens after 3 consecutive failures (no failure-rate rule)
// and lets one probe through after its cooldown.
func fleetCircuit(cooldown time.Duration) policy.CircuitSettings {
	return policy.CircuitSettings{Failures: 3, Cooldown: cooldown, FailureRate: 0, Window: 10 * time.Second, MinCalls: 20, Probes: 1}
}

// TestCircuitOpenOnEveryInstance opens a model's circuit with failures
// through instance A: instance B shows it open within a second, without
// calling the store to ask, and its own requests are refused; failures
// spread over both instances count together; after the cooldown, of many
// requests racing on both instances exactly one probes, fleet-wide; its
// success closes the circuit everywhere.
func TestCircuitOpenOnEveryInstance(t *testing.T) {
	srv := testredis.Start(t)
	const model = "claude-sonnet-4-5"
	a, b := join(t, srv, fleetCircuit(2*time.Second)), join(t, srv, fleetCircuit(2*time.Second))

	// Two failures on A and one on B: three in a row, fleet-wide.
	a.fail(model)
	a.fail(model)
	await(t, time.Second, "A's failures to reach the store", func() bool {
		return strings.Contains(srv.Client().HGet(context.Background(), a.keys.circuits(), circuitName(a.cb.Settings(), model)).Val(), " ")
	})
	b.fail(model)
	opened := time.Now()
	await(t, time.Second, "the circuit open on A", func() bool { return a.state(model) == policy.CircuitOpen })
	await(t, time.Second, "the circuit open on B", func() bool { return b.state(model) == policy.CircuitOpen })
	t.Logf("open on both instances %v after the third failure", time.Since(opened).Round(time.Millisecond))
	if ttl := srv.Client().PTTL(context.Background(), a.keys.circuits()).Val(); ttl < circuitIdle {
		t.Errorf("the circuits key has TTL %v, want at least %v", ttl, circuitIdle)
	}
	if p, _ := a.cb.Allow(model); p.Allowed || p.RetryIn <= 0 {
		t.Errorf("A let a request through an open circuit: %+v", p)
	}
	if p, _ := b.cb.Allow(model); p.Allowed {
		t.Errorf("B let a request through an open circuit: %+v", p)
	}
	for _, in := range []*instance{a, b} {
		in.mu.Lock()
		if len(in.notified) != 1 || in.notified[0].To != policy.CircuitOpen {
			t.Errorf("transitions notified: %+v, want the one to open", in.notified)
		}
		in.mu.Unlock()
	}

	// After the cooldown, one probe fleet-wide.
	time.Sleep(time.Until(opened.Add(2100 * time.Millisecond)))
	var (
		start   = make(chan struct{})
		wg      sync.WaitGroup
		allowed atomic.Int32
		permit  atomic.Pointer[policy.Permit]
		holder  atomic.Pointer[instance]
	)
	for _, in := range []*instance{a, b} {
		for range 16 {
			wg.Go(func() {
				<-start
				if p, _ := in.cb.Allow(model); p.Allowed {
					allowed.Add(1)
					permit.Store(&p)
					holder.Store(in)
				}
			})
		}
	}
	close(start)
	wg.Wait()
	if n := allowed.Load(); n != 1 {
		t.Fatalf("%d probes after the cooldown, want 1 fleet-wide", n)
	}
	other := a
	if holder.Load() == a {
		other = b
	}
	await(t, time.Second, "the other instance to show the probe", func() bool { return other.state(model) == policy.CircuitHalfOpen })
	if p, _ := other.cb.Allow(model); p.Allowed {
		t.Error("the instance not holding the probe let a request through")
	}
	holder.Load().cb.Record(*permit.Load(), policy.OutcomeSuccess)
	await(t, time.Second, "the circuit closed on both", func() bool {
		return a.state(model) == policy.CircuitClosed && b.state(model) == policy.CircuitClosed
	})
}

// TestCircuitOutcomeCountsOnlyInItsState sends the store a probe's failure
// of a generation that has passed (its holder's allowance ran out and
// another instance took the probe): it does not reopen the circuit. A
// closed-state failure that arrives while the circuit is open does not
// extend anything either.
func TestCircuitOutcomeCountsOnlyInItsState(t *testing.T) {
	srv := testredis.Start(t)
	const model = "gpt-4o"
	s := fleetCircuit(300 * time.Millisecond)
	a, b := join(t, srv, s), join(t, srv, s)
	for range 3 {
		a.fail(model)
	}
	await(t, time.Second, "open", func() bool { return b.state(model) == policy.CircuitOpen })
	time.Sleep(350 * time.Millisecond)
	first, err := a.Claim(model, "a-holder", s)
	if err != nil || first.State != policy.CircuitHalfOpen || first.Holder != "a-holder" {
		t.Fatalf("first claim: %+v, %v", first, err)
	}
	// a-holder's probe is lost; its allowance (a cooldown) runs out.
	time.Sleep(350 * time.Millisecond)
	second, err := b.Claim(model, "b-holder", s)
	if err != nil || second.State != policy.CircuitHalfOpen || second.Holder != "b-holder" || second.Generation <= first.Generation {
		t.Fatalf("second claim: %+v, %v (first %+v)", second, err, first)
	}
	a.Report(policy.CircuitReport{Model: model, State: policy.CircuitHalfOpen, Generation: first.Generation, Outcome: policy.OutcomeFailure, Settings: s})
	a.Report(policy.CircuitReport{Model: model, State: policy.CircuitClosed, Outcome: policy.OutcomeFailure, Settings: s})
	a.flush()
	now, err := b.Claim(model, "c-holder", s)
	if err != nil || now.Generation != second.Generation || now.State != policy.CircuitHalfOpen || now.Holder != "b-holder" {
		t.Errorf("after stale reports: %+v, %v; want the second probe's state %+v", now, err, second)
	}
	// The current probe's success closes it.
	a.Report(policy.CircuitReport{Model: model, State: policy.CircuitHalfOpen, Generation: second.Generation, Outcome: policy.OutcomeSuccess, Settings: s})
	a.flush()
	await(t, time.Second, "closed", func() bool { return b.state(model) == policy.CircuitClosed })
}

// TestCircuitBackstopRead starts an instance after a circuit opened, so
// the channel never told it: it shows the circuit open within a second,
// from the read that follows its heartbeats.
func TestCircuitBackstopRead(t *testing.T) {
	srv := testredis.Start(t)
	const model = "claude-haiku-4-5"
	a := join(t, srv, fleetCircuit(time.Minute))
	for range 3 {
		a.fail(model)
	}
	await(t, time.Second, "open on A", func() bool { return a.state(model) == policy.CircuitOpen })
	late := join(t, srv, fleetCircuit(time.Minute))
	start := time.Now()
	await(t, time.Second, "open on the late instance", func() bool { return late.state(model) == policy.CircuitOpen })
	t.Logf("the late instance showed the circuit open after %v", time.Since(start).Round(time.Millisecond))
	for _, st := range late.cb.Snapshot() {
		if st.Model == model && time.Until(st.Until) < 55*time.Second {
			t.Errorf("the late instance's cooldown ends in %v, want the minute A opened", time.Until(st.Until))
		}
	}
}

// openOnTwo starts two instances on srv and opens model's circuit with
// failures through the first; it returns once both show it open.
func openOnTwo(t *testing.T, srv *testredis.Server, settings policy.CircuitSettings, model string) (a, b *instance) {
	t.Helper()
	a, b = join(t, srv, settings), join(t, srv, settings)
	for range settings.Failures {
		a.fail(model)
	}
	await(t, time.Second, "open on A and B", func() bool {
		return a.state(model) == policy.CircuitOpen && b.state(model) == policy.CircuitOpen
	})
	return a, b
}

// TestCircuitSurvivesStoreDataLoss opens a circuit through A, then the
// store loses everything (a restart without persistence, as FLUSHALL
// leaves it): no instance closes the circuit before its cooldown ends,
// since an open circuit closes only through half-open; the instances hand
// it back to the store, where an instance that joins later finds it.
func TestCircuitSurvivesStoreDataLoss(t *testing.T) {
	srv := testredis.Start(t)
	const model = "claude-opus-4-5"
	settings := fleetCircuit(time.Minute)
	a, b := openOnTwo(t, srv, settings, model)
	if err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	// Two heartbeats: each instance reads the circuits back after each.
	time.Sleep(2*heartbeatEvery + 200*time.Millisecond)
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if st := in.state(model); st != policy.CircuitOpen {
			t.Errorf("%s shows the circuit %v after the store lost it, want open until its cooldown ends", name, st)
		}
		if p, _ := in.cb.Allow(model); p.Allowed {
			t.Errorf("%s let a request through the circuit the store lost", name)
		}
	}
	if v := srv.Client().HGet(context.Background(), a.keys.circuits(), circuitName(settings, model)).Val(); v == "" {
		t.Error("the instances did not hand the open circuit back to the store")
	}
	late := join(t, srv, settings)
	await(t, time.Second, "open on an instance that joined after the loss", func() bool { return late.state(model) == policy.CircuitOpen })
}

// TestExpiredOpenCircuitSurvivesStoreDataLoss: an open circuit whose
// cooldown is over, that no request has probed yet, still waits for its
// probe after the store lost its data: no instance closes it; the next
// request is the fleet's one probe.
func TestExpiredOpenCircuitSurvivesStoreDataLoss(t *testing.T) {
	srv := testredis.Start(t)
	const model = "claude-opus-4-5"
	settings := fleetCircuit(time.Second)
	a, b := openOnTwo(t, srv, settings, model)
	time.Sleep(1200 * time.Millisecond) // the cooldown ends; nothing probes
	if err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2*heartbeatEvery + 200*time.Millisecond)
	for name, in := range map[string]*instance{"A": a, "B": b} {
		in.mu.Lock()
		for _, tr := range in.notified {
			if tr.To == policy.CircuitClosed {
				t.Errorf("%s closed the circuit the store lost, with no probe: %+v", name, in.notified)
			}
		}
		in.mu.Unlock()
	}
	pa, _ := a.cb.Allow(model)
	pb, _ := b.cb.Allow(model)
	if !pa.Allowed || pb.Allowed {
		t.Errorf("after the loss: A allowed %v, B allowed %v; want A's request the one probe", pa.Allowed, pb.Allowed)
	}
	if st := a.state(model); st != policy.CircuitHalfOpen {
		t.Errorf("A shows %v during its probe, want half_open", st)
	}
}

// TestProbingCircuitSurvivesStoreDataLoss: a circuit half-open with its
// probe in flight when the store loses its data is not closed by the
// missing record: the instances hand it back as open, and the fleet takes
// one new probe; the old probe's success, reported against a claim the
// store no longer knows, closes nothing.
func TestProbingCircuitSurvivesStoreDataLoss(t *testing.T) {
	srv := testredis.Start(t)
	const model = "claude-opus-4-5"
	a, b := openOnTwo(t, srv, fleetCircuit(time.Second), model)
	time.Sleep(1100 * time.Millisecond)
	old, _ := a.cb.Allow(model)
	if !old.Allowed {
		t.Fatal("A took no probe after the cooldown")
	}
	await(t, time.Second, "half-open on B", func() bool { return b.state(model) == policy.CircuitHalfOpen })
	if err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2*heartbeatEvery + 200*time.Millisecond)
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if st := in.state(model); st == policy.CircuitClosed {
			t.Errorf("%s closed the probing circuit the store lost", name)
		}
	}
	a.cb.Record(old, policy.OutcomeSuccess)
	time.Sleep(100 * time.Millisecond) // the report's batch
	probes := 0
	for _, in := range []*instance{a, b, a, b} {
		if p, _ := in.cb.Allow(model); p.Allowed {
			probes++
		}
	}
	if probes != 1 {
		t.Errorf("%d requests went through after the loss, want the fleet's one new probe", probes)
	}
}

// TestCircuitsApartBySettings: breakers of different settings are
// different breakers on one instance (pooled by settings), and so they are
// in the fleet. A circuit opened under one rule is open on every instance
// with that rule, and closed, with no transition at all, under another.
func TestCircuitsApartBySettings(t *testing.T) {
	srv := testredis.Start(t)
	const model = "claude-opus-4-5"
	strict, lenient := fleetCircuit(time.Minute), fleetCircuit(time.Minute)
	lenient.Failures = 50
	a, b, c := join(t, srv, strict), join(t, srv, strict), join(t, srv, lenient)
	for range 3 {
		a.fail(model)
	}
	await(t, time.Second, "open on both strict breakers", func() bool {
		return a.state(model) == policy.CircuitOpen && b.state(model) == policy.CircuitOpen
	})
	time.Sleep(heartbeatEvery + 200*time.Millisecond) // a backstop read too
	if st := c.state(model); st != policy.CircuitClosed {
		t.Errorf("the lenient breaker shows %v, want closed: its rule saw 3 failures of 50", st)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.notified) != 0 {
		t.Errorf("the lenient breaker was notified of %+v", c.notified)
	}
}

// TestHoldsOnEveryInstance records a pacing hold on instance A: B holds the
// same model and credential within a second, and neither another model
// nor another credential. The store holds the credential's hash only, in
// a key that expires with the hold.
func TestHoldsOnEveryInstance(t *testing.T) {
	srv := testredis.Start(t)
	a, b := join(t, srv, fleetCircuit(time.Minute)), join(t, srv, fleetCircuit(time.Minute))
	const credential = "0123456789abcdef" // a credential's keyed hash
	held := policy.HoldKey{Model: "claude-sonnet-4-5", Credential: credential}
	now := time.Now()
	until := now.Add(3 * time.Second).UnixNano()
	a.holds.Hold(held, until, now.UnixNano())
	await(t, time.Second, "the hold on B", func() bool { return b.holds.Until(held, time.Now().UnixNano()) > 0 })
	t.Logf("held on B %v after A recorded it", time.Since(now).Round(time.Millisecond))
	if got := b.holds.Until(held, time.Now().UnixNano()); got < until-int64(50*time.Millisecond) || got > until+int64(50*time.Millisecond) {
		t.Errorf("B holds until %v, A until %v", time.Unix(0, got), time.Unix(0, until))
	}
	for _, other := range []policy.HoldKey{{Model: "claude-opus-4-1", Credential: credential}, {Model: held.Model, Credential: "fedcba9876543210"}} {
		if b.holds.Until(other, time.Now().UnixNano()) != 0 {
			t.Errorf("B holds %+v too", other)
		}
	}
	rdb := srv.Client()
	members := rdb.ZRange(context.Background(), a.keys.pacing(), 0, -1).Val()
	if len(members) != 1 || members[0] != credential+" "+held.Model {
		t.Errorf("pacing members %q", members)
	}
	if ttl := rdb.PTTL(context.Background(), a.keys.pacing()).Val(); ttl <= 2*time.Second || ttl > 3*time.Second {
		t.Errorf("pacing key TTL %v, want the hold's 3s", ttl)
	}
}

// TestSharedStateThroughOutage kills Redis: each instance's breaker keeps
// working alone (A's failures open A's circuit, not B's, since B cannot
// hear), and holds still hold locally. When Redis returns, empty, A hands
// over what it decided alone: B shows A's open circuit, and B holds A's
// hold.
func TestSharedStateThroughOutage(t *testing.T) {
	srv := testredis.Start(t)
	const model = "claude-opus-4-1"
	a, b := join(t, srv, fleetCircuit(time.Minute)), join(t, srv, fleetCircuit(time.Minute))
	srv.Kill()
	await(t, 3*time.Second, "the store marked down", func() bool { return a.Health().Down && b.Health().Down })

	var opened policy.Transition
	for range 3 {
		p, _ := a.cb.Allow(model)
		if tr := a.cb.Record(p, policy.OutcomeFailure); tr.Changed() {
			opened = tr
		}
	}
	if opened.To != policy.CircuitOpen {
		t.Fatalf("A's breaker did not open on its own during the outage: %+v", opened)
	}
	if p, _ := a.cb.Allow(model); p.Allowed {
		t.Error("A let a request through its open circuit during the outage")
	}
	held := policy.HoldKey{Model: model, Credential: "0123456789abcdef"}
	now := time.Now()
	a.holds.Hold(held, now.Add(10*time.Second).UnixNano(), now.UnixNano())
	if a.holds.Until(held, now.UnixNano()) == 0 {
		t.Error("A does not hold during the outage")
	}
	if b.state(model) != policy.CircuitClosed {
		t.Error("B learnt of A's circuit with the store down")
	}

	srv.Restart()
	await(t, 3*time.Second, "the store restored", func() bool { return !a.Health().Down && !b.Health().Down })
	await(t, 2*time.Second, "A's circuit open on B", func() bool { return b.state(model) == policy.CircuitOpen })
	await(t, 2*time.Second, "A's hold on B", func() bool { return b.holds.Until(held, time.Now().UnixNano()) > 0 })
	if a.state(model) != policy.CircuitOpen {
		t.Error("A's circuit closed when the store returned")
	}
}

// TestFingerprintMismatchWarns starts two instances that hash keys with
// different keys: the second to beat says so, once; one with the same key
// does not.
func TestFingerprintMismatchWarns(t *testing.T) {
	srv := testredis.Start(t)
	stores := make([]*testStore, 3)
	for i, fp := range []string{"aaaa", "aaaa", "bbbb"} {
		core, logs := observer.New(zap.InfoLevel)
		s, err := New(Config{URLs: []string{srv.URL}, Prefix: "prints", Timeout: 500 * time.Millisecond, Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		s.SetKeyFingerprint(fp)
		t.Cleanup(func() { _ = s.Close() })
		stores[i] = &testStore{Store: s, logs: logs}
		await(t, 2*time.Second, "a heartbeat", func() bool { return srv.Client().Exists(context.Background(), s.keys.fingerprint()).Val() == 1 })
	}
	time.Sleep(1200 * time.Millisecond) // two more heartbeats each
	const msg = "fleet instances hash keys with different keys: pacing holds recorded by other instances will not hold here, and key hashes differ between instances; give every instance the same Caddy storage, or the same ai_resilience/key_hash.key in it"
	for i, want := range []int{0, 0, 1} {
		if n := stores[i].lines(msg); n != want {
			t.Errorf("instance %d logged the mismatch %d times, want %d", i, n, want)
		}
	}
	if ttl := srv.Client().PTTL(context.Background(), stores[0].keys.fingerprint()).Val(); ttl <= 0 {
		t.Errorf("the fingerprint key has TTL %v", ttl)
	}
}
