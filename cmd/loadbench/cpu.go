package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The kernel's accounting is the measure of a process's cost: what the
// process was charged, whatever the load generator believes it sent. See
// proc(5) for /proc/<pid>/stat and /proc/stat, and the kernel's
// Documentation/scheduler/sched-stats.rst for schedstat, whose first field
// is the nanoseconds a task has run.

// userHZ is the unit of the tick counts in /proc: sysconf(_SC_CLK_TCK),
// which Linux fixes at 100 for user space on every architecture.
const userHZ = 100

// tick is one USER_HZ tick.
const tick = time.Second / userHZ

// procCPU is a process's CPU time at one moment.
type procCPU struct {
	// tasks holds each thread's time on CPU, by thread id, from schedstat.
	tasks map[string]time.Duration
	// ticks is utime+stime from /proc/<pid>/stat: coarse, but it keeps
	// the time of threads that have exited.
	ticks int64
}

// readProcCPU reads a process's CPU time.
func readProcCPU(pid int) (procCPU, error) {
	c := procCPU{tasks: map[string]time.Duration{}}
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return c, fmt.Errorf("reading the threads of process %d: %w", pid, err)
	}
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread has just exited
		}
		f := strings.Fields(string(raw))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return c, fmt.Errorf("parsing %s/%s/schedstat: %w", dir, e.Name(), err)
		}
		c.tasks[e.Name()] = time.Duration(ns)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, fmt.Errorf("reading the CPU time of process %d: %w", pid, err)
	}
	// The command name in parentheses may hold spaces; the fields after
	// it start with the state (field 3), so utime and stime (fields 14
	// and 15) are the 12th and 13th.
	rest := raw[bytes.LastIndexByte(raw, ')')+1:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return c, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(f))
	}
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return c, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
		}
		c.ticks += n
	}
	return c, nil
}

// cpuSince returns the CPU time the process used from before to c: the
// nanosecond sum over its threads when every thread of before still runs
// (a thread started since counts whole), or else the tick count, which
// keeps what exited threads used; precise says which.
func (c procCPU) cpuSince(before procCPU) (d time.Duration, precise bool) {
	for tid, t0 := range before.tasks {
		t1, ok := c.tasks[tid]
		if !ok {
			return time.Duration(c.ticks-before.ticks) * tick, false
		}
		d += t1 - t0
	}
	for tid, t1 := range c.tasks {
		if _, ok := before.tasks[tid]; !ok {
			d += t1
		}
	}
	return d, true
}

// coreTimes is the time some CPUs spent, by kind, summed over the CPUs, in
// ticks, from /proc/stat.
type coreTimes struct {
	work  int64 // user, nice and system: what processes were charged
	irq   int64 // irq and softirq: network processing among others
	steal int64 // taken by the hypervisor
	total int64 // all of the above plus idle and iowait
}

// readCores reads /proc/stat for the CPUs.
func readCores(cpus []int) (coreTimes, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return coreTimes{}, fmt.Errorf("reading /proc/stat: %w", err)
	}
	want := map[string]bool{}
	for _, c := range cpus {
		want["cpu"+strconv.Itoa(c)] = true
	}
	var t coreTimes
	for line := range strings.SplitSeq(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !want[f[0]] {
			continue
		}
		var v [8]int64
		for i := range v {
			if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return coreTimes{}, fmt.Errorf("parsing /proc/stat %s: %w", f[0], err)
			}
		}
		// user nice system idle iowait irq softirq steal
		t.work += v[0] + v[1] + v[2]
		t.irq += v[5] + v[6]
		t.steal += v[7]
		for _, x := range v {
			t.total += x
		}
	}
	return t, nil
}

func (t coreTimes) minus(b coreTimes) coreTimes {
	return coreTimes{work: t.work - b.work, irq: t.irq - b.irq, steal: t.steal - b.steal, total: t.total - b.total}
}

// busy is the share of the time the CPUs were not idle.
func (t coreTimes) busy() float64 {
	if t.total <= 0 {
		return 0
	}
	return float64(t.work+t.irq+t.steal) / float64(t.total)
}

// parseCPUList parses a CPU list as taskset takes it: "0", "1-3", "0,2-3".
func parseCPUList(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("bad CPU list %q: use numbers and ranges such as 0 or 1-3,5", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad CPU list %q: use numbers and ranges such as 0 or 1-3,5", s)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}
