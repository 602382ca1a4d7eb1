package fleet

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// Circuits and pacing holds shared by the fleet. Each instance shows them
// from memory (a policy.CircuitBreaker, a policy.PaceHolds), so a request
// reads them without a call to the store. The store decides every circuit
// transition and keeps every hold; it announces each on one pub/sub
// channel, which every instance listens to, and after every heartbeat
// (heartbeatEvery, 500 ms) each instance reads them all again, in case the
// channel lost a message (it does not replay what a disconnected listener
// missed): with the time of one read, within the second in which every
// instance must see a change. Outcomes and holds go to the store in the
// settlement batches.

const (
	// maxCircuits bounds the circuits the store keeps, and what one read
	// returns of them and of the holds: model names are client input.
	maxCircuits = 4096
	// maxSharedHolds bounds the holds the store keeps.
	maxSharedHolds = 4096
	// circuitIdle is the least time the circuits hash outlives its last
	// write: long enough that a quiet model keeps its counts.
	circuitIdle = 10 * time.Minute
)

// shared is the fleet state the store keeps for the instance's breakers
// and hold tables.
type shared struct {
	mu       sync.RWMutex
	breakers []*policy.CircuitBreaker
	holds    []*policy.PaceHolds

	// Waiting for the next batch, guarded by Store.mu.
	reports map[reportKey]*tally
	held    map[policy.HoldKey]int64 // hold → its end, Unix ns
}

// reportKey gathers the reports that one call can count together.
type reportKey struct {
	model    string
	state    policy.CircuitState
	gen      uint64
	settings policy.CircuitSettings
}

// tally is a batch of outcomes for one reportKey, in order: successes,
// failures, and the failures since the last success.
type tally struct {
	successes, failures, trailing int64
}

// WatchCircuits keeps cb showing the fleet's circuits, until the returned
// function is called.
func (s *Store) WatchCircuits(cb *policy.CircuitBreaker) (stop func()) {
	return watch(&s.shared.mu, &s.shared.breakers, cb)
}

// WatchHolds keeps h holding what the fleet holds, until the returned
// function is called.
func (s *Store) WatchHolds(h *policy.PaceHolds) (stop func()) {
	return watch(&s.shared.mu, &s.shared.holds, h)
}

// watch adds v to list, and returns the function that takes it out.
func watch[T comparable](mu *sync.RWMutex, list *[]T, v T) func() {
	mu.Lock()
	*list = append(*list, v)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		for i, w := range *list {
			if w == v {
				*list = append((*list)[:i:i], (*list)[i+1:]...)
				return
			}
		}
	}
}

// watchers returns the breakers and hold tables to update.
func (s *Store) watchers() ([]*policy.CircuitBreaker, []*policy.PaceHolds) {
	s.shared.mu.RLock()
	defer s.shared.mu.RUnlock()
	return s.shared.breakers, s.shared.holds
}

// Claim implements policy.CircuitStore: one call of the claim script.
func (s *Store) Claim(model, holder string, st policy.CircuitSettings) (policy.SharedCircuit, error) {
	out, err := s.runCircuit(circuitClaimScript, []string{s.keys.circuits()}, s.circuitArgs(st, circuitName(st, model), holder, max(st.Cooldown.Milliseconds(), 1)))
	if err != nil {
		return policy.SharedCircuit{}, err
	}
	cs, err := parseCircuits(out)
	if err != nil || len(cs) != 1 {
		return policy.SharedCircuit{}, fmt.Errorf("unexpected reply from the claim script: %v", err)
	}
	return cs[0], nil
}

// Report implements policy.CircuitStore: the outcome joins the next batch,
// unless the store is unreachable, when the breaker decides alone.
func (s *Store) Report(r policy.CircuitReport) {
	k := reportKey{model: r.Model, state: r.State, gen: r.Generation, settings: r.Settings}
	s.mu.Lock()
	if s.closed || s.down.Load() {
		s.mu.Unlock()
		return
	}
	t := s.shared.reports[k]
	if t == nil {
		if len(s.shared.reports) >= maxCircuits {
			s.mu.Unlock()
			return
		}
		k.model = strings.Clone(k.model) // it may share memory with a pooled request body
		t = new(tally)
		s.shared.reports[k] = t
	}
	switch r.Outcome {
	case policy.OutcomeSuccess:
		t.successes++
		t.trailing = 0
	case policy.OutcomeFailure:
		t.failures++
		t.trailing++
	}
	s.mu.Unlock()
	s.signal()
}

// ShareHold implements policy.HoldStore: the hold joins the next batch. A
// hold recorded while the store is unreachable is sent when it returns.
func (s *Store) ShareHold(k policy.HoldKey, until int64) {
	s.mu.Lock()
	if s.closed || s.down.Load() {
		s.mu.Unlock()
		return
	}
	if prev, found := s.shared.held[k]; found || len(s.shared.held) < maxSharedHolds {
		k.Model = strings.Clone(k.Model)
		s.shared.held[k] = max(prev, until)
	}
	s.mu.Unlock()
	s.signal()
}

// flushShared sends the pending reports and holds, maxBatch per call, and
// shows each breaker the circuits as the store left them. What a failed
// call carried is lost: the breakers decide alone while the store is down,
// and the holds are sent again when it returns.
func (s *Store) flushShared() {
	var reports map[reportKey]*tally
	var held map[policy.HoldKey]int64
	s.mu.Lock()
	if len(s.shared.reports) > 0 {
		reports, s.shared.reports = s.shared.reports, make(map[reportKey]*tally)
	}
	if len(s.shared.held) > 0 {
		held, s.shared.held = s.shared.held, make(map[policy.HoldKey]int64)
	}
	s.mu.Unlock()
	if reports != nil {
		s.sendReports(reports)
	}
	if held != nil {
		s.sendHolds(held)
	}
}

// sendReports counts reports in the store, maxBatch per call.
func (s *Store) sendReports(reports map[reportKey]*tally) {
	keys := []string{s.keys.circuits()}
	args := s.circuitArgs(policy.CircuitSettings{})
	n := 0
	send := func() {
		if n == 0 {
			return
		}
		if out, err := s.runCircuit(circuitReportScript, keys, args); err == nil {
			s.applyCircuits(out)
		}
		args, n = args[:3], 0
	}
	for k, t := range reports {
		st := k.settings
		args = append(args, circuitName(st, k.model), int(k.state), k.gen, t.successes, t.failures, t.trailing,
			st.Failures, max(st.Cooldown.Milliseconds(), 1), strconv.FormatFloat(st.FailureRate, 'g', -1, 64),
			sliceMillis(st), st.MinCalls, st.Probes)
		args[2] = max(args[2].(int64), idleMillis(st))
		if n++; n == maxBatch {
			send()
		}
	}
	send()
}

// sendHolds records holds in the store, maxBatch per call.
func (s *Store) sendHolds(held map[policy.HoldKey]int64) {
	args := make([]any, 2, 2+2*min(len(held), maxBatch))
	args[0], args[1] = s.keys.events(), maxSharedHolds
	send := func() {
		if len(args) == 2 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := holdScript.Run(ctx, s.client, []string{s.keys.pacing()}, args...).Err()
		cancel()
		if err != nil {
			s.failed(err)
		} else {
			s.succeeded()
		}
		args = args[:2]
	}
	now := time.Now().UnixNano()
	for k, until := range held {
		rest := (until - now + int64(time.Millisecond) - 1) / int64(time.Millisecond)
		if rest <= 0 {
			continue
		}
		args = append(args, k.Credential+" "+k.Model, rest)
		if len(args) == 2+2*maxBatch {
			send()
		}
	}
	send()
}

// circuitArgs returns the arguments every circuit script starts with (the
// channel, the bound, the hash's idle time under st), then more.
func (s *Store) circuitArgs(st policy.CircuitSettings, more ...any) []any {
	return append([]any{s.keys.events(), maxCircuits, idleMillis(st)}, more...)
}

// runCircuit runs a circuit script and returns its reply.
func (s *Store) runCircuit(script *redis.Script, keys []string, args []any) ([]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	out, err := script.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		s.failed(err)
		return nil, err
	}
	s.succeeded()
	return out, nil
}

// idleMillis is how long the circuits hash outlives a write under st.
func idleMillis(st policy.CircuitSettings) int64 {
	return max(circuitIdle, 2*st.Cooldown, 2*st.Window).Milliseconds()
}

// sliceMillis is the width of one slice of st's failure-rate window.
func sliceMillis(st policy.CircuitSettings) int64 {
	return max(st.Window.Milliseconds()/10, 1)
}

// parseCircuits reads the circuits in a script's reply: model, gen, state,
// remaining ms and holder each.
func parseCircuits(out []any) ([]policy.SharedCircuit, error) {
	if len(out)%5 != 0 {
		return nil, fmt.Errorf("%d values, not five per circuit", len(out))
	}
	cs := make([]policy.SharedCircuit, 0, len(out)/5)
	for i := 0; i < len(out); i += 5 {
		model, ok1 := out[i].(string)
		gen, ok2 := out[i+1].(int64)
		state, ok3 := out[i+2].(int64)
		rest, ok4 := out[i+3].(int64)
		holder, ok5 := out[i+4].(string)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || state < 0 || state > int64(policy.CircuitHalfOpen) || gen < 0 {
			return nil, fmt.Errorf("circuit %d: unexpected values %v", i/5, out[i:i+5])
		}
		cs = append(cs, policy.SharedCircuit{
			Model: model, State: policy.CircuitState(state), Generation: uint64(gen),
			Remaining: time.Duration(rest) * time.Millisecond, Holder: holder,
		})
	}
	return cs, nil
}

// applyCircuits shows the circuits of a script's reply to every breaker
// of the settings each was decided under.
func (s *Store) applyCircuits(out []any) {
	cs, err := parseCircuits(out)
	if err != nil {
		s.logger.Debug("reading circuits from the store", zap.Error(err))
		return
	}
	breakers, _ := s.watchers()
	for _, cb := range breakers {
		id := settingsID(cb.Settings())
		for _, c := range cs {
			if sid, model, ok := strings.Cut(c.Model, " "); ok && sid == id {
				c.Model = model
				cb.Apply(c)
			}
		}
	}
}

// circuitName is the name of model's circuit in the store under settings
// st: "<settings id> <model>". Breakers of different settings are
// different breakers (each instance pools them by settings, so that a
// route with a stricter rule keeps its own circuits), and so are their
// circuits in the store.
func circuitName(st policy.CircuitSettings, model string) string {
	return settingsID(st) + " " + model
}

// settingsID names a breaker's settings in 16 hex digits: a hash of every
// setting, the same on every instance.
func settingsID(st policy.CircuitSettings) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d %d %g %d %d %d", st.Failures, st.Cooldown, st.FailureRate, st.Window, st.MinCalls, st.Probes)
	return fmt.Sprintf("%016x", h.Sum64())
}

// applyHolds gives every hold table the holds of a reply: member and
// remaining ms each.
func (s *Store) applyHolds(out []any) {
	_, tables := s.watchers()
	now := time.Now().UnixNano()
	for i := 0; i+1 < len(out); i += 2 {
		member, ok1 := out[i].(string)
		rest, ok2 := out[i+1].(int64)
		cred, model, ok3 := strings.Cut(member, " ")
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		until := time.Unix(0, now).Add(time.Duration(min(rest, int64(maxHold/time.Millisecond))) * time.Millisecond).UnixNano()
		for _, h := range tables {
			h.Apply(policy.HoldKey{Model: model, Credential: cred}, until, now)
		}
	}
}

// maxHold bounds a pacing hold read from the store, as the gateway bounds
// the holds it records.
const maxHold = 24 * time.Hour

// listen applies what the channel announces until ctx ends. go-redis
// subscribes again after a lost connection, and the periodic read makes
// up for what was missed meanwhile.
func (s *Store) listen(ctx context.Context) {
	defer s.done.Done()
	ps := s.client.Subscribe(ctx, s.keys.events())
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			s.announced(m.Payload)
		}
	}
}

// announced applies one message of the channel:
//
//	c <gen> <state> <remaining ms> <holder> <model>   a circuit's transition
//	p <remaining ms> <credential hash> <model>        a pacing hold
func (s *Store) announced(msg string) {
	switch kind, rest, _ := strings.Cut(msg, " "); kind {
	case "c":
		f := strings.SplitN(rest, " ", 5)
		if len(f) != 5 {
			return
		}
		gen, err1 := strconv.ParseInt(f[0], 10, 64)
		state, err2 := strconv.ParseInt(f[1], 10, 64)
		ms, err3 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return
		}
		s.applyCircuits([]any{f[4], gen, state, ms, f[3]})
	case "p":
		ms, member, ok := strings.Cut(rest, " ")
		n, err := strconv.ParseInt(ms, 10, 64)
		if ok && err == nil {
			s.applyHolds([]any{member, n})
		}
	}
}

// sync reads the fleet's circuits and holds, and shows them to every
// breaker and hold table. First the store learns of the circuits this
// instance shows open on its own: opened while the store was unreachable,
// or kept open when the store lost them. When resync is set, the store has
// just returned, and it learns of the holds recorded meanwhile too.
func (s *Store) sync(resync bool) {
	breakers, tables := s.watchers()
	if len(breakers) == 0 && len(tables) == 0 {
		return
	}
	s.pushOpens(breakers)
	if resync {
		s.pushHolds(tables)
	}
	args := s.circuitArgs(policy.CircuitSettings{}, maxCircuits)
	seen := make(map[string]bool)
	for _, cb := range breakers {
		settings := cb.Settings()
		for _, st := range cb.Snapshot() {
			name := circuitName(settings, st.Model)
			if st.State != policy.CircuitClosed && !seen[name] && len(seen) < maxCircuits {
				seen[name] = true
				args = append(args, name)
			}
		}
	}
	out, err := s.runCircuit(syncScript, []string{s.keys.circuits(), s.keys.pacing(), s.keys.epoch()}, args)
	if err != nil || len(out) != 3 {
		return
	}
	circuits, ok1 := out[0].([]any)
	holds, ok2 := out[1].([]any)
	epoch, ok3 := out[2].(string)
	if !ok1 || !ok2 || !ok3 {
		return
	}
	if prev := s.storeEpoch.Swap(&epoch); prev != nil && *prev != epoch {
		// The store lost its data: its word on the circuits this
		// instance shows is gone, not "closed". They and the holds go
		// back to it, and the next read shows them as the fleet's.
		s.logger.Warn("fleet store lost its state; handing back open circuits and pacing holds")
		for _, cb := range breakers {
			cb.Disown()
		}
		s.pushOpens(breakers)
		s.pushHolds(tables)
		return
	}
	s.applyCircuits(circuits)
	s.applyHolds(holds)
}

// pushOpens tells the store of the circuits this instance shows open on
// its own (see policy.CircuitBreaker.LocalOpens).
func (s *Store) pushOpens(breakers []*policy.CircuitBreaker) {
	for _, cb := range breakers {
		st := cb.Settings()
		for _, c := range cb.LocalOpens() {
			rest := max(c.Remaining.Milliseconds(), 1)
			if out, err := s.runCircuit(circuitOpenScript, []string{s.keys.circuits()}, s.circuitArgs(st, circuitName(st, c.Model), rest, sliceMillis(st))); err == nil {
				s.applyCircuits(out)
			}
		}
	}
}

// pushHolds shares the holds this instance recorded while the store was
// unreachable.
func (s *Store) pushHolds(tables []*policy.PaceHolds) {
	now := time.Now()
	for _, h := range tables {
		for _, hs := range h.Snapshot(now) {
			s.ShareHold(hs.HoldKey, hs.Until)
		}
	}
}
