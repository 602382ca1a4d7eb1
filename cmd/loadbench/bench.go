package main

import (
	"fmt"
	"time"
)

// settle is how long a turn waits after the load stops before it reads the
// gateway's CPU time, so that requests still in flight when the load
// generator stopped are charged to the turn that sent them.
const settle = 50 * time.Millisecond

// phaseSpec is one phase of a scenario: how many connections, how long a
// turn lasts, who generates the load and how the mock answers.
type phaseSpec struct {
	name   string
	conns  int
	d      time.Duration
	gen    loadGen
	script string
}

// turn is one site's share of a round: the load generator's view and the
// kernel's.
type turn struct {
	load
	cpu     time.Duration // the measured gateway's CPU time
	precise bool          // cpu is the nanosecond sum over threads
	wall    time.Duration
	gw, ld  coreTimes // the gateway and the load CPUs, in ticks
	// noise is the share of the gateway CPUs that other processes (the
	// idle side excepted) and the hypervisor took during the turn.
	noise float64
}

// sample is one side in one round: its two turns together.
type sample struct {
	requests, errors int
	firstErr         string
	elapsed, cpu     time.Duration
	wall             time.Duration
	p50, p99         time.Duration
	ttfb50, ttfb99   time.Duration
	gw, ld           coreTimes
	noise            float64
	coarse           bool // the CPU time of a turn came from ticks
	turns            int
}

func (s *sample) add(t turn) {
	s.requests += t.requests
	s.errors += t.errors
	if s.firstErr == "" {
		s.firstErr = t.firstErr
	}
	s.elapsed += t.elapsed
	s.cpu += t.cpu
	s.wall += t.wall
	s.coarse = s.coarse || !t.precise
	s.noise = max(s.noise, t.noise)
	s.gw = s.gw.plus(t.gw)
	s.ld = s.ld.plus(t.ld)
	// Percentiles do not add up; the turns' mean stands for the round.
	n := time.Duration(s.turns)
	s.p50 = (s.p50*n + t.p50) / (n + 1)
	s.p99 = (s.p99*n + t.p99) / (n + 1)
	s.ttfb50 = (s.ttfb50*n + t.ttfb50) / (n + 1)
	s.ttfb99 = (s.ttfb99*n + t.ttfb99) / (n + 1)
	s.turns++
}

// rps is the answered requests per second, by the load generator's clock.
func (s sample) rps() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.requests) / s.elapsed.Seconds()
}

// cpuPerRequest is the gateway's CPU µs per answered request.
func (s sample) cpuPerRequest() float64 {
	if s.requests == 0 {
		return 0
	}
	return float64(s.cpu) / float64(time.Microsecond) / float64(s.requests)
}

// gwLoad is the share of the gateway CPUs the measured gateway used.
func (s sample) gwLoad(cpus int) float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(s.cpu) / float64(s.wall) / float64(max(cpus, 1))
}

func (t coreTimes) plus(b coreTimes) coreTimes {
	return coreTimes{work: t.work + b.work, irq: t.irq + b.irq, steal: t.steal + b.steal, total: t.total + b.total}
}

// round is one ABBA (or BAAB) sequence of turns.
type round struct {
	a, b   sample
	order  string
	reruns int
	noisy  bool // still noisy after the reruns allowed
}

// phaseResult is a phase's rounds.
type phaseResult struct {
	spec   phaseSpec
	rounds []round
}

// result is a scenario's phases and, with -profile, where its profiles are.
type result struct {
	s      scenario
	phases []phaseResult
}

// phase returns the result of the named phase, or nil.
func (r result) phase(name string) *phaseResult {
	for i := range r.phases {
		if r.phases[i].spec.name == name {
			return &r.phases[i]
		}
	}
	return nil
}

// measure runs a scenario's phases, printing each phase's rounds as it
// ends.
func (st *stack) measure(s scenario) (result, error) {
	res := result{s: s}
	for _, sd := range []*side{st.a, st.b} {
		if err := st.goc.check(sd.p.URL, s); err != nil {
			return res, fmt.Errorf("the %s site does not answer as it should: %w", sd.label, err)
		}
	}
	specs := []phaseSpec{{name: "load", conns: st.o.conns, d: st.o.duration, gen: st.gen, script: s.script}}
	if st.o.latConns > 0 {
		specs = append(specs, phaseSpec{name: "latency", conns: st.o.latConns, d: st.o.latencyD, gen: st.gen, script: s.script})
	}
	if s.stream && st.o.ttfb {
		specs = append(specs, phaseSpec{name: "ttfb", conns: 1, d: st.o.latencyD, gen: st.goc, script: pacedStream})
	}
	for _, spec := range specs {
		p, err := st.runPhase(s, spec)
		if err != nil {
			return res, fmt.Errorf("%s phase: %w", spec.name, err)
		}
		printRounds(st, s, p)
		res.phases = append(res.phases, p)
	}
	if st.o.profileDir != "" {
		if err := st.profile(s); err != nil {
			return res, err
		}
	}
	return res, nil
}

// runPhase warms both sites up and runs the rounds, each in ABBA order
// starting with A in even rounds and with B in odd ones, and runs a round
// again when another process took too much of the gateway CPUs in it.
func (st *stack) runPhase(s scenario, spec phaseSpec) (phaseResult, error) {
	p := phaseResult{spec: spec}
	if st.o.warmup > 0 {
		for _, sd := range []*side{st.a, st.b} {
			if _, err := spec.gen.run(sd.p.URL, s, spec.script, spec.conns, st.o.warmup); err != nil {
				return p, err
			}
		}
	}
	for i := range st.o.rounds {
		order := []*side{st.a, st.b, st.b, st.a}
		if i%2 == 1 {
			order = []*side{st.b, st.a, st.a, st.b}
		}
		var r round
		for attempt := 0; ; attempt++ {
			if err := st.awaitQuiet(); err != nil {
				return p, err
			}
			r = round{order: order[0].label[:1] + order[1].label[:1] + order[2].label[:1] + order[3].label[:1], reruns: attempt}
			for _, sd := range order {
				t, err := st.turn(sd, s, spec)
				if err != nil {
					return p, err
				}
				if sd == st.a {
					r.a.add(t)
				} else {
					r.b.add(t)
				}
			}
			r.noisy = max(r.a.noise, r.b.noise) > st.o.noise
			if !r.noisy || attempt == st.o.reruns {
				break
			}
			fmt.Printf("  %s round %d: other work took %.0f%% of the gateway CPUs in a turn; running it again\n",
				spec.name, i+1, 100*max(r.a.noise, r.b.noise))
		}
		p.rounds = append(p.rounds, r)
	}
	return p, nil
}

// turn runs the load against one side and reads what the kernel charged.
func (st *stack) turn(sd *side, s scenario, spec phaseSpec) (turn, error) {
	other := st.a
	if sd == st.a {
		other = st.b
	}
	before, err := st.snapshot(sd, other)
	if err != nil {
		return turn{}, err
	}
	start := time.Now()
	l, err := spec.gen.run(sd.p.URL, s, spec.script, spec.conns, spec.d)
	if err != nil {
		return turn{}, err
	}
	time.Sleep(settle)
	after, err := st.snapshot(sd, other)
	if err != nil {
		return turn{}, err
	}
	t := turn{load: l, wall: time.Since(start), gw: after.gw.minus(before.gw), ld: after.ld.minus(before.ld)}
	t.cpu, t.precise = after.measured.cpuSince(before.measured)
	idle, _ := after.idle.cpuSince(before.idle)
	if n := len(st.gwCPUs); n > 0 && t.wall > 0 {
		others := max(0, time.Duration(t.gw.work)*tick-t.cpu-idle) + time.Duration(t.gw.steal)*tick
		t.noise = float64(others) / float64(t.wall) / float64(n)
	}
	return t, nil
}

// snapshot is the CPU accounting at one moment: the measured and the idle
// gateway's processes, and the gateway and load CPUs (when pinned).
type snapshot struct {
	measured, idle procCPU
	gw, ld         coreTimes
}

func (st *stack) snapshot(measured, idle *side) (snap snapshot, err error) {
	if snap.measured, err = readProcCPU(measured.p.Pid()); err != nil {
		return snap, err
	}
	if snap.idle, err = readProcCPU(idle.p.Pid()); err != nil {
		return snap, err
	}
	if len(st.gwCPUs) == 0 {
		return snap, nil
	}
	if snap.gw, err = readCores(st.gwCPUs); err != nil {
		return snap, err
	}
	snap.ld, err = readCores(st.loadCPUs)
	return snap, err
}

// quietProbe is how long awaitQuiet watches the gateway CPUs at a time.
const quietProbe = 500 * time.Millisecond

// awaitQuiet waits, up to -quiet-wait, until other work leaves the
// gateway CPUs idle (within -noise) while both gateways are, so that a
// round does not start in the middle of someone else's build.
func (st *stack) awaitQuiet() error {
	if len(st.gwCPUs) == 0 || st.o.quietWait <= 0 {
		return nil
	}
	start := time.Now()
	for {
		before, err := readCores(st.gwCPUs)
		if err != nil {
			return err
		}
		time.Sleep(quietProbe)
		after, err := readCores(st.gwCPUs)
		if err != nil {
			return err
		}
		busy := after.minus(before).busy()
		if busy <= st.o.noise {
			if waited := time.Since(start); waited > quietProbe {
				fmt.Printf("  waited %s for other work to leave the gateway CPUs\n", waited.Round(time.Second))
			}
			return nil
		}
		if time.Since(start) >= st.o.quietWait {
			fmt.Printf("  the gateway CPUs are still %.0f%% busy with other work after %s; measuring anyway\n", 100*busy, st.o.quietWait)
			return nil
		}
	}
}
