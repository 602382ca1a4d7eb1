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
// for the window, on the store's clock.
//
//	KEYS[1]   the instances key, a sorted set of ids scored by the time of
//	          their last heartbeat, ms
//	ARGV[1]   this instance's id
//	ARGV[2]   the window, ms
//
// It returns the number of live instances, this one included.
var heartbeatScript = redis.NewScript(`
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', ms - window))
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
`)
