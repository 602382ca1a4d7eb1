package fleet

import "github.com/redis/go-redis/v9"

// The store's server-side scripts. Redis and Valkey run a script atomically,
// so one call decides every zone of a request with no lock and no second
// round trip, on the store's own clock (TIME), which every instance shares
// whatever its own clock says. Both servers replicate a script's effects,
// not the script, so reading TIME before writing is allowed
// (https://redis.io/docs/latest/develop/programmability/eval-intro/).
//
// A zone key holds the two buckets of one zone and key value as the
// instants they are full again, "<s> <ns> <s> <ns>" (requests, then
// tokens): whole seconds and nanoseconds of Unix time. Lua numbers are
// doubles, exact only up to 2^53, which Unix nanoseconds exceed; split in
// two they stay exact, and a debt (an instant less now) is exact too, since
// the store never lets one pass policy.MaxDebt (2^50 ns). So the scripts
// apply the same rule, to the nanosecond, as the local buckets
// (policy.ShiftDebt and policy.WaitOf). The spans they take come from the
// gateway, computed by the zone from its current capacity: the store keeps
// no settings, and a reload's capacities apply to the next request.
//
// A key expires when both its buckets are full again (PX of the larger
// debt, rounded up), and a bucket pair that is full is deleted rather than
// written: an absent key is two full buckets.

// scriptLib holds the functions both bucket scripts share. clock must be
// set from TIME first.
const scriptLib = `
local ts, tn
local function clock()
	local now = redis.call('TIME')
	ts, tn = tonumber(now[1]), tonumber(now[2]) * 1000
end
-- debt turns a full instant into nanoseconds until it, exactly while it
-- is within a few weeks of now; a bucket full long ago owes nothing.
local function debt(s, n)
	local ds = s - ts
	if ds < -1 then
		return 0
	end
	return ds * 1e9 + (n - tn)
end
-- read returns the debts of a zone key's two buckets.
local function read(key)
	local v = redis.call('GET', key)
	if not v then
		return 0, 0
	end
	local rs, rn, xs, xn = string.match(v, '^(%d+) (%d+) (%d+) (%d+)$')
	if not rs then
		return 0, 0
	end
	return debt(tonumber(rs), tonumber(rn)), debt(tonumber(xs), tonumber(xn))
end
-- shift is policy.ShiftDebt: take (span > 0) or give back (span < 0).
local function shift(d, span, maxDebt)
	local v = math.max(d, 0) + span
	if v < 0 then
		return 0
	end
	return math.min(v, maxDebt)
end
-- instant is now plus d nanoseconds, as whole seconds and nanoseconds.
local function instant(d)
	local n = tn + d
	local s = math.floor(n / 1e9)
	n = n - s * 1e9
	if n < 0 then
		s, n = s - 1, n + 1e9
	elseif n >= 1e9 then
		s, n = s + 1, n - 1e9
	end
	return ts + s, n
end
-- write stores a zone key's debts, expiring it when both are paid.
local function write(key, dr, dt)
	local longest = math.max(dr, dt)
	if longest <= 0 then
		redis.call('DEL', key)
		return
	end
	local rs, rn = instant(math.max(dr, 0))
	local xs, xn = instant(math.max(dt, 0))
	redis.call('SET', key, string.format('%d %d %d %d', rs, rn, xs, xn), 'PX', math.ceil(longest / 1e6))
end
`

// admitScript reserves one request in every zone key it names, all or
// nothing.
//
//	KEYS[i]   a zone key
//	ARGV[1]   the refill period, ns (policy.LimitPeriod)
//	ARGV[2]   the largest debt, ns (policy.MaxDebt)
//	ARGV[3i], ARGV[3i+1], ARGV[3i+2]
//	          for KEYS[i]: the request span, the token span (-1: the zone
//	          does not limit it) and the longest wait allowed, ns
//
// It returns {1, 0, wait, s, µs, then the debts after the reservation of
// each key, requests then tokens} when every key admits the request, or
// {0, i, wait, s, µs, and the debts of KEYS[i] as they stand} when KEYS[i]
// is the first that would wait longer than allowed; s and µs are the
// store's clock. A key whose spans are all 0 or -1 is only read.
//
// The script decides every key before it writes any, which is what makes
// the decision all or nothing; another kind of state that must be decided
// with the zones, such as a spend budget for a period, joins it as a second
// group of keys with arguments of its own, checked in the same first pass.
var admitScript = redis.NewScript(scriptLib + `
clock()
local period, maxDebt = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = #KEYS
local out = {1, 0, 0, ts, tn / 1000}
local debts = {}
for i = 1, n do
	local dr, dt = read(KEYS[i])
	local base = 3 * i
	local sr, st, bound = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
	local nr, nt, wait = math.max(dr, 0), math.max(dt, 0), 0
	if sr >= 0 then
		nr = shift(dr, sr, maxDebt)
		wait = math.max(wait, nr - period)
	end
	if st >= 0 then
		nt = shift(dt, st, maxDebt)
		wait = math.max(wait, nt - period)
	end
	if wait > bound then
		return {0, i, wait, ts, tn / 1000, dr, dt}
	end
	out[3] = math.max(out[3], wait)
	debts[i] = {nr, nt, sr > 0 or st > 0}
end
for i = 1, n do
	local d = debts[i]
	if d[3] then
		write(KEYS[i], d[1], d[2])
	end
	out[#out + 1] = d[1]
	out[#out + 1] = d[2]
end
return out
`)

// adjustScript moves zone keys by signed spans without any bound:
// settlements, cancellations and handed-back outage traffic, netted per
// key by the batch that sends them.
//
//	KEYS[i]   a zone key
//	ARGV[1]   the largest debt, ns (policy.MaxDebt)
//	ARGV[2i], ARGV[2i+1]
//	          for KEYS[i]: the request span and the token span, ns
//
// It returns the store's clock: {s, µs}.
var adjustScript = redis.NewScript(scriptLib + `
clock()
local maxDebt = tonumber(ARGV[1])
for i = 1, #KEYS do
	local sr, st = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
	if sr ~= 0 or st ~= 0 then
		local dr, dt = read(KEYS[i])
		write(KEYS[i], shift(dr, sr, maxDebt), shift(dt, st, maxDebt))
	end
end
return {ts, tn / 1000}
`)

// heartbeatScript records that an instance is alive and counts the live
// ones: an instance is live from its first heartbeat until none has come
// for the window, on the store's clock. It also keeps the fingerprint of
// the key the fleet's instances hash keys with, as the first to beat set
// it, so that each can tell whether it hashes alike.
//
//	KEYS[1]   the instances key, a sorted set of ids scored by the time of
//	          their last heartbeat, ms
//	KEYS[2]   the fingerprint key
//	ARGV[1]   this instance's id
//	ARGV[2]   the window, ms
//	ARGV[3]   this instance's fingerprint, "" for none
//
// It returns the number of live instances, this one included, and the
// fleet's fingerprint ("" for none).
var heartbeatScript = redis.NewScript(`
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', ms - window))
redis.call('PEXPIRE', KEYS[1], window)
local fingerprint = ''
if ARGV[3] ~= '' then
	redis.call('SET', KEYS[2], ARGV[3], 'NX')
	redis.call('PEXPIRE', KEYS[2], 86400000)
	fingerprint = redis.call('GET', KEYS[2])
end
return {redis.call('ZCARD', KEYS[1]), fingerprint}
`)

// circuitLib holds what the circuit scripts share. Every model's circuit
// is one field of the circuits hash (KEYS[1]), named after the model:
//
//	"<gen> <state> <until ms> <consecutive> <passed> <holder> <slice ms>
//	 [<slot> <successes> <failures>]..."
//
// gen is the state's generation: the store's clock in microseconds when it
// was entered (at least one more than the one before), so that it grows
// across restarts of the store and every instance can order the states it
// learns of. state is 0 closed, 1 open, 2 half-open (policy.CircuitState);
// until, when open, the end of the cooldown, when half-open, the end of the
// probe's allowance; holder, when half-open, the breaker that holds the
// probe ("-" for none); the slices count outcomes in the failure-rate
// window, ten of slice ms each. A closed circuit with nothing counted is
// deleted: an absent model is closed. ARGV[1] is always the channel that
// carries every transition to the instances, ARGV[2] the most circuits
// the hash may hold (a model beyond it is not counted: model names are
// client input), ARGV[3] how long the hash outlives its last write, ms.
const circuitLib = `
local CLOSED, OPEN, HALF = 0, 1, 2
local now_ms, now_us
local function clock()
	local t = redis.call('TIME')
	now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function parse(v)
	local c = {g = 0, s = CLOSED, u = 0, c = 0, p = 0, h = '-', sl = 1, w = {}, absent = true}
	if not v then
		return c
	end
	local f = {}
	for tok in string.gmatch(v, '%S+') do
		f[#f + 1] = tok
	end
	if #f < 7 then
		return c
	end
	c.g, c.s, c.u, c.c, c.p = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
	c.h, c.sl, c.absent = f[6], tonumber(f[7]), false
	for i = 8, #f - 2, 3 do
		c.w[#c.w + 1] = {tonumber(f[i]), tonumber(f[i + 1]), tonumber(f[i + 2])}
	end
	return c
end
local function load(model)
	return parse(redis.call('HGET', KEYS[1], model))
end
-- live drops the slices that have left the window.
local function live(c)
	local cur, w = math.floor(now_ms / c.sl), {}
	for _, e in ipairs(c.w) do
		if e[1] > cur - 10 then
			w[#w + 1] = e
		end
	end
	c.w = w
end
local function pristine(c)
	live(c)
	return c.s == CLOSED and c.c == 0 and #c.w == 0
end
local function save(model, c)
	if pristine(c) then
		redis.call('HDEL', KEYS[1], model)
		return
	end
	local parts = {string.format('%d %d %d %d %d %s %d', c.g, c.s, c.u, c.c, c.p, c.h, c.sl)}
	for _, e in ipairs(c.w) do
		parts[#parts + 1] = string.format('%d %d %d', e[1], e[2], e[3])
	end
	redis.call('HSET', KEYS[1], model, table.concat(parts, ' '))
	local ttl = math.max(c.u - now_ms, 0) + tonumber(ARGV[3])
	if redis.call('PTTL', KEYS[1]) < ttl then
		redis.call('PEXPIRE', KEYS[1], ttl)
	end
end
local function remaining(c)
	if c.s == CLOSED then
		return 0
	end
	return math.max(c.u - now_ms, 0)
end
-- gen of an absent circuit is now: closed since at least then.
local function gen(c)
	if c.absent then
		return now_us
	end
	return c.g
end
local function enter(c, state, till)
	c.g = math.max(c.g + 1, now_us)
	c.s, c.u, c.p, c.h, c.absent = state, till, 0, '-', false
	if state ~= HALF then
		c.c = 0
	end
	if state == CLOSED then
		c.w = {}
	end
end
local function publish(model, c)
	redis.call('PUBLISH', ARGV[1], string.format('c %d %d %d %s %s', c.g, c.s, remaining(c), c.h, model))
end
local function reply(out, model, c)
	out[#out + 1] = model
	out[#out + 1] = gen(c)
	out[#out + 1] = c.s
	out[#out + 1] = remaining(c)
	out[#out + 1] = c.h
end
-- announce keeps a transition and tells the instances.
local function announce(model, c)
	save(model, c)
	publish(model, c)
end
-- answer is the reply about one circuit.
local function answer(model, c)
	local out = {}
	reply(out, model, c)
	return out
end
local function full(c)
	return c.absent and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[2])
end
`

// circuitReportScript counts batched outcomes, deciding transitions as
// policy.CircuitBreaker does for one instance.
//
//	ARGV[4+12i...] for each report: model, the state its attempts started
//	in, that state's generation, successes, failures, failures after the
//	last success, then the reporting breaker's rule: failures, cooldown
//	ms, failure rate (percent), window slice ms, min calls, probes
//
// A closed-state report counts while the circuit is closed; a probe's only
// in its own generation of half-open. It returns, for each report, the
// model, gen, state, remaining ms and holder after it.
var circuitReportScript = redis.NewScript(circuitLib + `
clock()
local out = {}
for i = 4, #ARGV, 12 do
	local model, st, g = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
	local succ, fail, trailing = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
	local failures, cooldown, rate = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
	local sl, minCalls, probes = tonumber(ARGV[i + 9]), tonumber(ARGV[i + 10]), tonumber(ARGV[i + 11])
	local c = load(model)
	local changed = false
	if full(c) then
		-- not counted: the hash holds as many circuits as it may
	elseif st == CLOSED and c.s == CLOSED then
		if c.sl ~= sl then
			c.sl, c.w = sl, {}
		end
		live(c)
		local cur = math.floor(now_ms / sl)
		local e = c.w[#c.w]
		if not e or e[1] ~= cur then
			e = {cur, 0, 0}
			c.w[#c.w + 1] = e
		end
		e[2], e[3] = e[2] + succ, e[3] + fail
		if succ > 0 then
			c.c = trailing
		else
			c.c = c.c + fail
		end
		if fail > 0 and c.c >= failures then
			local s, f = 0, 0
			for _, x in ipairs(c.w) do
				s, f = s + x[2], f + x[3]
			end
			if s + f < minCalls or f * 100 >= rate * (s + f) then
				enter(c, OPEN, now_ms + cooldown)
				changed = true
			end
		end
		save(model, c)
	elseif st == HALF and c.s == HALF and c.g == g then
		if fail > 0 then
			enter(c, OPEN, now_ms + cooldown)
			changed = true
		else
			c.p = c.p + succ
			if c.p >= probes then
				enter(c, CLOSED, 0)
				changed = true
			end
		end
		save(model, c)
	end
	if changed then
		publish(model, c)
	end
	reply(out, model, c)
end
return out
`)

// circuitClaimScript takes a model's probe for a breaker when the circuit
// is open past its cooldown, or half-open past its probe's allowance (the
// probes sent under it presumed lost): the circuit turns half-open with
// this holder for a cooldown, as SET NX PX would take a lock, in the same
// step as the generation moves, so the two cannot disagree. Otherwise it
// only reads. A breaker claims only a circuit it shows open or half-open,
// so one the store has no record of was lost (or closed meanwhile, when a
// probe costs nothing wrong): it is probed, never taken as closed.
//
//	ARGV[4], ARGV[5], ARGV[6]   the model, the holder, the cooldown ms
//
// It returns the model, gen, state, remaining ms and holder.
var circuitClaimScript = redis.NewScript(circuitLib + `
clock()
local model = ARGV[4]
local c = load(model)
if (c.s ~= CLOSED or c.absent) and now_ms >= c.u then
	enter(c, HALF, now_ms + tonumber(ARGV[6]))
	c.h = ARGV[5]
	announce(model, c)
end
return answer(model, c)
`)

// circuitOpenScript opens a model's circuit that one instance opened on
// its own while it could not reach the store, unless the store's circuit
// is half-open (a probe is deciding) or already open for longer.
//
//	ARGV[4], ARGV[5], ARGV[6]   the model, the remaining cooldown ms, the
//	                            window slice ms
//
// It returns the model, gen, state, remaining ms and holder.
var circuitOpenScript = redis.NewScript(circuitLib + `
clock()
local model, rest = ARGV[4], tonumber(ARGV[5])
local c = load(model)
if c.s == CLOSED and not full(c) or c.s == OPEN and c.u < now_ms + rest then
	if c.absent then
		c.sl = tonumber(ARGV[6])
	end
	enter(c, OPEN, now_ms + rest)
	announce(model, c)
end
return answer(model, c)
`)

// syncScript reads what the instances show from memory, as a backstop to
// the channel: every circuit that is not closed (and drops the closed ones
// with nothing left to count), the circuits of the models asked for, and
// the live pacing holds.
//
//	KEYS[2]                the pacing holds: a sorted set of
//	                       "<credential hash> <model>" by the end of the
//	                       hold, ms
//	KEYS[3]                the store's epoch, set to the store's clock
//	                       when missing; it outlives the last read by the
//	                       circuits hash's idle time
//	ARGV[4]                the most circuits and holds returned
//	ARGV[5...]             models to report in any state
//
// It returns {circuits: model, gen, state, remaining ms, holder each;
// holds: member, remaining ms each; the epoch}.
var syncScript = redis.NewScript(circuitLib + `
clock()
local limit = tonumber(ARGV[4])
local circuits, seen = {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
	local c = parse(all[i + 1])
	if c.s ~= CLOSED then
		if #circuits < 5 * limit then
			reply(circuits, all[i], c)
			seen[all[i]] = true
		end
	elseif pristine(c) then
		redis.call('HDEL', KEYS[1], all[i])
	end
end
for i = 5, #ARGV do
	if not seen[ARGV[i]] then
		reply(circuits, ARGV[i], load(ARGV[i]))
	end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
local held = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_ms, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
local holds = {}
for i = 1, #held, 2 do
	holds[#holds + 1] = held[i]
	holds[#holds + 1] = tonumber(held[i + 1]) - now_ms
end
local epoch = redis.call('GET', KEYS[3])
if not epoch then
	epoch = string.format('%.0f', now_us)
	redis.call('SET', KEYS[3], epoch)
end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {circuits, holds, epoch}
`)

// holdScript records pacing holds in the sorted set of holds and announces
// each on the channel. The set keeps the holds that end last, at most the
// bound, and expires with the last of them.
//
//	KEYS[1]       the pacing holds (see syncScript)
//	ARGV[1]       the channel
//	ARGV[2]       the most holds the set keeps
//	ARGV[3+2i], ARGV[4+2i]   a member and how long it holds, ms
var holdScript = redis.NewScript(`
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #ARGV, 2 do
	local rest = tonumber(ARGV[i + 1])
	if rest > 0 then
		redis.call('ZADD', KEYS[1], 'GT', now_ms + rest, ARGV[i])
		redis.call('PUBLISH', ARGV[1], string.format('p %d %s', rest, ARGV[i]))
	end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[2])
if n > limit then
	redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - limit - 1)
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 2 then
	redis.call('PEXPIRE', KEYS[1], math.max(tonumber(last[2]) - now_ms, 1))
end
return n
`)
