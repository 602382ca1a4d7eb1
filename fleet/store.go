// Package fleet keeps the state that a fleet of Caddy instances shares in
// Redis or Valkey: the buckets of every fleet-scope rate-limit zone, each
// model's circuit breaker, the pacing holds, and the instances that are
// alive. Its Store implements policy.SharedStore: one atomic script per
// admitted request decides all of the request's fleet zones on the store's
// clock, settlements travel in batches off the request path, and when the
// store cannot be reached each instance limits alone with its share and
// hands back what it admitted once the store returns. It implements
// policy.CircuitStore and policy.HoldStore too: circuits and holds are
// read from each instance's memory, which the store keeps up to date.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// Timing of the store's background work.
const (
	// heartbeatEvery is how often a healthy instance says it is alive. An
	// instance counts as live until none has come for liveWindow, so two
	// may be lost before the others stop counting it.
	heartbeatEvery = 500 * time.Millisecond
	liveWindow     = 3 * time.Second
	// probeEvery is how often an unreachable store is tried again.
	probeEvery = 250 * time.Millisecond
	// downAfter consecutive failed calls mark the store unreachable: one
	// lost packet or slow reply does not.
	downAfter = 3
	// flushDelay is how long settlements gather before they are sent in
	// one call: a few milliseconds, far below the 1 s within which another
	// instance must see them, and enough to net a burst per key.
	flushDelay = 5 * time.Millisecond
	// maxBatch bounds the keys of one settlement call, so that one script
	// holds the store only briefly.
	maxBatch = 256
	// maxLedgerKeys bounds what an instance remembers of its own traffic
	// during an outage; beyond it, new keys' traffic is not handed back.
	maxLedgerKeys = 100_000
	// restoreGrace is how long an instance keeps limiting alone after it
	// first reaches the store again, once it has handed back what it
	// admitted meanwhile. Every instance probes every probeEvery, so by
	// then all of them have handed theirs back, and none admits through
	// the store while it does not yet show the others' traffic.
	restoreGrace = 3 * probeEvery
	// dialAllowance is the time a probe gives a new connection (a TLS
	// handshake to a distant store may take longer than a command's
	// timeout); the store is then judged by the command's own timeout.
	dialAllowance = 2 * time.Second
)

// Config is how to reach the store and what to do without it.
type Config struct {
	// URLs are redis:// or rediss:// URLs: one for a standalone server, or
	// several seed nodes with Cluster.
	URLs []string
	// Password, when set, overrides any password in the URLs.
	Password string
	// Prefix starts every key the store writes.
	Prefix string
	// Timeout bounds every call on the request path.
	Timeout time.Duration
	// OnUnavailable is what fleet zones do while the store is unreachable.
	OnUnavailable policy.Fallback
	// Cluster connects to a Redis Cluster through the URLs as seeds.
	Cluster bool
	// Logger receives the store's transitions; nil logs nothing.
	Logger *zap.Logger
}

// Store is the fleet's shared state in one Redis or Valkey deployment. It
// is safe for concurrent use. Close stops it.
type Store struct {
	client   redis.UniversalClient
	keys     keys
	cluster  bool
	timeout  time.Duration
	fallback policy.Fallback
	id       string // this instance in the heartbeat set
	logger   *zap.Logger
	// fingerprint identifies the key this instance hashes keys with.
	fingerprint atomic.Pointer[string]
	warnedPrint atomic.Bool
	epoch       time.Time // the ledger's clock

	down      atomic.Bool
	failures  atomic.Int32
	instances atomic.Int64
	downSince atomic.Int64 // Unix ns of the last transition to down
	backSince atomic.Int64 // Unix ns of the first success since, 0 before it

	resync atomic.Bool // the store has returned: push what was decided alone
	// storeEpoch is the store's epoch at the last read (see keys.epoch); a new
	// one means the store lost its data.
	storeEpoch atomic.Pointer[string]

	admissions admissionBatch

	mu      sync.Mutex
	shared  shared
	pending map[string]*[2]int64 // zone key → netted spans waiting for the next flush
	ledger  map[string]*[2]int64 // zone key → full instants (on epoch) of this instance's traffic during an outage
	closed  bool
	wake    chan struct{}

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New connects to the store described by cfg and starts its heartbeats and
// settlement batches. It does not wait for the store: a store that cannot
// be reached at start is a store outage like any other.
func New(cfg Config) (*Store, error) {
	if cfg.Timeout <= 0 {
		return nil, errors.New("the store needs a positive timeout")
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	s := &Store{
		client:   client,
		keys:     newKeys(cfg.Prefix),
		cluster:  cfg.Cluster,
		timeout:  cfg.Timeout,
		fallback: cfg.OnUnavailable,
		id:       hex.EncodeToString(id),
		logger:   cfg.Logger,
		epoch:    time.Now(),
		pending:  make(map[string]*[2]int64),
		ledger:   make(map[string]*[2]int64),
		wake:     make(chan struct{}, 1),
	}
	s.admissions.send = s.sendAdmissions
	s.shared.reports = make(map[reportKey]*tally)
	s.shared.held = make(map[policy.HoldKey]int64)
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	installClientLog.Do(func() { redis.SetLogger(clientLog) })
	clientLog.logger.Store(s.logger.Named("redis"))
	s.instances.Store(1)
	storeHealthy.Set(1)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done.Add(3)
	go s.heartbeats(ctx)
	go s.settlements(ctx)
	go s.listen(ctx)
	return s, nil
}

// checkPrefix refuses a prefix that would break the hash tag.
func checkPrefix(p string) error {
	if p == "" {
		return errors.New("the key prefix is empty")
	}
	if strings.ContainsAny(p, "{}") {
		return fmt.Errorf("the key prefix %q contains a brace, which would change the hash tag that keeps a request's keys in one cluster slot", p)
	}
	return nil
}

// newClient makes the go-redis client for cfg: no retries of its own (the
// gateway falls back instead of waiting), every call bounded by the
// timeout, and no handshake extensions that a plain Redis 7 or Valkey 8
// would refuse.
func newClient(cfg Config) (redis.UniversalClient, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("no store URL: give the URL of the store, e.g. redis://10.0.0.5:6379")
	}
	if len(cfg.URLs) > 1 && !cfg.Cluster {
		return nil, fmt.Errorf("%d store URLs given without cluster: several URLs are the seed nodes of a Redis Cluster, so add `cluster`, or give one URL", len(cfg.URLs))
	}
	opts := make([]*redis.Options, len(cfg.URLs))
	for i, u := range cfg.URLs {
		if err := CheckURL(u); err != nil {
			return nil, err
		}
		o, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("parsing store URL %s: %w", redactURL(u), err)
		}
		if cfg.Password != "" {
			o.Password = cfg.Password
		}
		if cfg.Cluster && o.DB != 0 {
			return nil, fmt.Errorf("store URL %s selects database %d, but a Redis Cluster has only database 0", redactURL(u), o.DB)
		}
		opts[i] = o
	}
	first := opts[0]
	noMaint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	dial := max(dialAllowance, cfg.Timeout)
	if cfg.Cluster {
		addrs := make([]string, len(opts))
		for i, o := range opts {
			addrs[i] = o.Addr
		}
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                    addrs,
			Username:                 first.Username,
			Password:                 first.Password,
			TLSConfig:                first.TLSConfig,
			MaxRetries:               -1,
			DialTimeout:              dial,
			DialerRetries:            1,
			ReadTimeout:              cfg.Timeout,
			WriteTimeout:             cfg.Timeout,
			ContextTimeoutEnabled:    true,
			DisableIdentity:          true,
			MaintNotificationsConfig: noMaint,
		}), nil
	}
	first.MaxRetries = -1
	first.DialTimeout = dial
	first.DialerRetries = 1
	first.ReadTimeout, first.WriteTimeout = cfg.Timeout, cfg.Timeout
	first.ContextTimeoutEnabled = true
	first.DisableIdentity = true
	first.MaintNotificationsConfig = noMaint
	return redis.NewClient(first), nil
}

// CheckURL accepts a redis:// or rediss:// (TLS) URL with a host.
func CheckURL(u string) error {
	if u == "" {
		// What an unset {env.…} placeholder leaves.
		return errors.New("the store URL is empty (an environment variable it names may be unset): use redis://host:port, or rediss://host:port for TLS")
	}
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "redis" && parsed.Scheme != "rediss") || parsed.Host == "" {
		return fmt.Errorf("bad store URL %s: use redis://host:port, or rediss://host:port for TLS", redactURL(u))
	}
	return nil
}

// redactURL returns u without its password, for error messages.
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return parsed.Redacted()
}

// Close stops the heartbeats, sends what is left to settle, takes this
// instance out of the live set and closes the connections. Charges that
// arrive afterwards are dropped.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.done.Wait()
	if !s.down.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		_ = s.client.ZRem(ctx, s.keys.instances(), s.id).Err()
		cancel()
	}
	return s.client.Close()
}

// Health implements policy.SharedStore.
func (s *Store) Health() policy.StoreHealth {
	return policy.StoreHealth{
		Down:          s.down.Load(),
		OnUnavailable: s.fallback,
		Instances:     int(s.instances.Load()),
	}
}

// SetKeyFingerprint sets what identifies, without revealing it, the key
// this instance hashes credentials and zone keys with. Pacing holds are
// shared by credential hash, so every instance must hash alike: the store
// keeps the first instance's fingerprint, and an instance whose differs
// says so. Until it is set, nothing is checked.
func (s *Store) SetKeyFingerprint(fp string) {
	s.fingerprint.Store(&fp)
}

// Kind names the store's deployment: "redis" for a standalone Redis or
// Valkey, "redis_cluster" for a cluster.
func (s *Store) Kind() string {
	if s.cluster {
		return "redis_cluster"
	}
	return "redis"
}

// Instance is one live member of the fleet, as its heartbeats show it.
type Instance struct {
	// ID is the instance's random name in the store, new at every start.
	ID string
	// LastSeen is its last heartbeat, on the store's clock.
	LastSeen time.Time
	// Self is true for the instance that asked.
	Self bool
}

// Instances reads the live instances from the store, the most recently
// seen first, at most limit of them.
func (s *Store) Instances(ctx context.Context, limit int) ([]Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	zs, err := s.client.ZRevRangeWithScores(ctx, s.keys.instances(), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Instance, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		out = append(out, Instance{ID: id, LastSeen: time.UnixMilli(int64(z.Score)), Self: id == s.id})
	}
	return out, nil
}

// ID returns this instance's name in the store.
func (s *Store) ID() string { return s.id }

// Reserve implements policy.SharedStore: one call of the admission script.
func (s *Store) Reserve(cs []policy.Charge, debts []policy.Debt) (time.Duration, int, error) {
	wait, refused, _, err := s.reserve(cs, debts)
	return wait, refused, err
}

// reserve is Reserve that also returns the store's clock at the decision.
func (s *Store) reserve(cs []policy.Charge, debts []policy.Debt) (time.Duration, int, time.Time, error) {
	keys := make([]string, len(cs))
	for i, c := range cs {
		keys[i] = s.keys.zone(c.Zone, HashKey(c.Key))
	}
	return s.admit(keys, cs, debts)
}

// KeyName implements policy.SharedStore: a key value's hash.
func (s *Store) KeyName(key string) string { return HashKey(key) }

// Peek implements policy.SharedStore: one call of the admission script that
// only reads.
func (s *Store) Peek(zone string, names []string, debts []policy.Debt) error {
	if len(names) == 0 {
		return nil
	}
	keys := make([]string, len(names))
	cs := make([]policy.Charge, len(names))
	for i, name := range names {
		keys[i] = s.keys.zone(zone, name)
		cs[i] = policy.Charge{Requests: policy.Unlimited, Tokens: policy.Unlimited}
	}
	_, _, _, err := s.admit(keys, cs, debts)
	return err
}

// admit runs the admission script for cs on the zone keys named.
func (s *Store) admit(keys []string, cs []policy.Charge, debts []policy.Debt) (time.Duration, int, time.Time, error) {
	args := make([]any, 2, 2+3*len(cs))
	args[0], args[1] = policy.LimitPeriod, policy.MaxDebt
	for _, c := range cs {
		args = append(args, c.Requests, c.Tokens, int64(c.Bound))
	}
	start := time.Now()
	a := admissions.Get().(*admission)
	a.keys, a.args = keys, args
	s.admissions.do(a)
	out, err := a.out, a.err
	*a = admission{turn: a.turn}
	admissions.Put(a)
	if err == nil {
		err = checkReply(out, len(cs))
	}
	if err != nil {
		s.failed(err)
		return 0, -1, time.Time{}, err
	}
	roundTrip.Observe(time.Since(start).Seconds())
	s.succeeded()
	wait, at := time.Duration(out[2]), time.Unix(out[3], out[4]*int64(time.Microsecond))
	if out[0] == 0 {
		refused := int(out[1]) - 1
		debts[refused] = policy.Debt{Requests: out[5], Tokens: out[6]}
		return wait, refused, at, nil
	}
	for i := range cs {
		debts[i] = policy.Debt{Requests: out[5+2*i], Tokens: out[6+2*i]}
	}
	return wait, -1, at, nil
}

// checkReply verifies the shape of the admission script's reply, so that a
// store that answered something else counts as a failure, not a panic.
func checkReply(out []int64, n int) error {
	switch {
	case len(out) == 7 && out[0] == 0 && out[1] >= 1 && out[1] <= int64(n):
		return nil
	case len(out) == 5+2*n && out[0] == 1:
		return nil
	}
	return fmt.Errorf("unexpected reply from the admission script: %d values for %d keys", len(out), n)
}

// Adjust implements policy.SharedStore: the charges join the next batch,
// netted per key, or, while the store is unreachable, this instance's
// ledger of what it let through alone.
func (s *Store) Adjust(cs []policy.Charge) {
	now := s.clock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	for _, c := range cs {
		if c.Requests == 0 && c.Tokens == 0 {
			continue
		}
		key := s.keys.zone(c.Zone, HashKey(c.Key))
		if s.down.Load() {
			s.record(key, c.Requests, c.Tokens, now)
			continue
		}
		p := s.pending[key]
		if p == nil {
			p = new([2]int64)
			s.pending[key] = p
		}
		p[0] += c.Requests
		p[1] += c.Tokens
	}
	s.mu.Unlock()
	s.signal()
}

// signal wakes the settlement loop, which then waits flushDelay for more.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// clock reads the ledger's clock, in nanoseconds. It runs at 1/n of real
// time for n live instances: while the store is down, every instance keeps
// a ledger of its own traffic, and the fleet's one bucket refills once for
// all of them, so each ledger may count only its part of the refill.
func (s *Store) clock() int64 {
	return int64(time.Since(s.epoch)) / s.instances.Load()
}

// record adds spans to the ledger of a key at now, with the buckets' own
// rule, so that what the ledger holds refills as this instance's part of
// the store's buckets would: when the store returns, only what is still
// owed is handed back. The caller holds s.mu.
func (s *Store) record(key string, requests, tokens, now int64) {
	e := s.ledger[key]
	if e == nil {
		if len(s.ledger) >= maxLedgerKeys {
			return
		}
		e = &[2]int64{now, now}
		s.ledger[key] = e
	}
	e[0] = now + policy.ShiftDebt(e[0]-now, requests)
	e[1] = now + policy.ShiftDebt(e[1]-now, tokens)
}

// handBack moves what the ledger still owes into the next batch: the store
// is back, and the traffic this instance let through alone counts as it
// would have, less what has refilled since.
func (s *Store) handBack() {
	now := s.clock()
	s.mu.Lock()
	for key, e := range s.ledger {
		r, t := max(e[0]-now, 0), max(e[1]-now, 0)
		if r == 0 && t == 0 {
			continue
		}
		p := s.pending[key]
		if p == nil {
			p = new([2]int64)
			s.pending[key] = p
		}
		p[0] += r
		p[1] += t
	}
	clear(s.ledger)
	s.mu.Unlock()
	s.signal()
}

// settlements sends the pending charges flushDelay after the first of a
// batch arrives, until the store is closed; then it sends the rest.
func (s *Store) settlements(ctx context.Context) {
	defer s.done.Done()
	timer := time.NewTimer(0)
	<-timer.C
	for {
		select {
		case <-ctx.Done():
			s.flush()
			return
		case <-s.wake:
		}
		timer.Reset(flushDelay)
		select {
		case <-ctx.Done():
			timer.Stop()
			s.flush()
			return
		case <-timer.C:
		}
		s.flush()
	}
}

// flush sends every pending charge, maxBatch keys per call, then the
// pending circuit outcomes and pacing holds. A batch of charges the store
// does not take goes to the ledger, to be handed back when the store
// returns.
func (s *Store) flush() {
	s.flushCharges()
	s.flushShared()
}

// flushCharges sends the pending charges.
func (s *Store) flushCharges() {
	s.mu.Lock()
	batch := s.pending
	if len(batch) == 0 {
		s.mu.Unlock()
		return
	}
	s.pending = make(map[string]*[2]int64, len(batch))
	s.mu.Unlock()

	keys := make([]string, 0, min(len(batch), maxBatch))
	args := make([]any, 0, 1+2*cap(keys))
	send := func() {
		if len(keys) == 0 {
			return
		}
		args = append(args[:0], policy.MaxDebt)
		for _, k := range keys {
			args = append(args, batch[k][0], batch[k][1])
		}
		if _, err := s.runAdjust(keys, args); err != nil {
			now := s.clock()
			s.mu.Lock()
			for _, k := range keys {
				s.record(k, batch[k][0], batch[k][1], now)
			}
			s.mu.Unlock()
		}
		keys = keys[:0]
	}
	for k := range batch {
		keys = append(keys, k)
		if len(keys) == maxBatch {
			send()
		}
	}
	send()
}

// runAdjust runs the adjustment script over keys with args (the largest
// debt, then two spans per key) and returns the store's clock.
func (s *Store) runAdjust(keys []string, args []any) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	out, err := adjustScript.Run(ctx, s.client, keys, args...).Int64Slice()
	if err == nil && len(out) != 2 {
		err = fmt.Errorf("unexpected reply from the adjustment script: %d values", len(out))
	}
	if err != nil {
		s.failed(err)
		return time.Time{}, err
	}
	s.succeeded()
	return time.Unix(out[0], out[1]*int64(time.Microsecond)), nil
}

// heartbeats tells the store this instance is alive and learns how many
// are, every heartbeatEvery, then reads the fleet's circuits and holds
// (see shared.go), and probes the store every probeEvery
// while it is unreachable.
func (s *Store) heartbeats(ctx context.Context) {
	defer s.done.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		s.beat(ctx)
		if s.down.Load() {
			timer.Reset(probeEvery)
			continue
		}
		s.sync(s.resync.Swap(false))
		timer.Reset(heartbeatEvery)
	}
}

// beat sends one heartbeat. While the store is down it first lets a
// connection be made within dialAllowance, then judges the store by the
// same timeout as the request path, so that a store too slow for requests
// is not declared back.
func (s *Store) beat(ctx context.Context) {
	if s.down.Load() {
		pctx, cancel := context.WithTimeout(ctx, dialAllowance)
		err := s.client.Ping(pctx).Err()
		cancel()
		if err != nil {
			return
		}
	}
	hctx, cancel := context.WithTimeout(ctx, s.timeout)
	fp := ""
	if p := s.fingerprint.Load(); p != nil {
		fp = *p
	}
	out, err := heartbeatScript.Run(hctx, s.client, []string{s.keys.instances(), s.keys.fingerprint()}, s.id, liveWindow.Milliseconds(), fp).Slice()
	cancel()
	var n int64
	var fleetPrint string
	if err == nil {
		var ok1, ok2 bool
		if len(out) == 2 {
			n, ok1 = out[0].(int64)
			fleetPrint, ok2 = out[1].(string)
		}
		if !ok1 || !ok2 {
			err = fmt.Errorf("unexpected reply from the heartbeat script: %v", out)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			s.failed(err)
		}
		return
	}
	if fleetPrint != fp && s.warnedPrint.CompareAndSwap(false, true) {
		s.logger.Warn("fleet instances hash keys with different keys: pacing holds recorded by other instances will not hold here, and key hashes differ between instances; give every instance the same Caddy storage, or the same ai_resilience/key_hash.key in it")
	}
	// While the store is down, each instance's share stands on the count
	// it last saw: a store just back knows only the instances that have
	// beaten since, and a smaller count would hand out bigger shares.
	if !s.down.Load() {
		s.instances.Store(max(n, 1))
		liveInstances.Set(float64(n))
	}
	s.succeeded()
}

// failed counts a failed call; the downAfter-th in a row marks the store
// down, with one warn line and the gauge. A failure while the store is down
// restarts its return.
func (s *Store) failed(err error) {
	if s.down.Load() {
		s.backSince.Store(0)
	}
	if s.failures.Add(1) < downAfter || !s.down.CompareAndSwap(false, true) {
		return
	}
	s.downSince.Store(time.Now().UnixNano())
	storeHealthy.Set(0)
	s.logger.Warn("fleet store unavailable",
		zap.Error(err),
		zap.String("on_unavailable", s.fallback.String()),
		zap.Int64("instances", s.instances.Load()))
}

// succeeded clears the failure count. While the store is down, the first
// success hands back what this instance admitted alone, and restoreGrace
// later, if the store still answers, the store is marked back, with one
// warn line and the gauge, and the traffic of the grace is handed back too.
func (s *Store) succeeded() {
	s.failures.Store(0)
	if !s.down.Load() {
		return
	}
	now := time.Now().UnixNano()
	if s.backSince.CompareAndSwap(0, now) {
		s.handBack()
		return
	}
	if now-s.backSince.Load() < int64(restoreGrace) || !s.down.CompareAndSwap(true, false) {
		return
	}
	s.backSince.Store(0)
	s.resync.Store(true)
	storeHealthy.Set(1)
	s.logger.Warn("fleet store restored",
		zap.Int64("outage_ms", time.Since(time.Unix(0, s.downSince.Load())).Milliseconds()))
	s.handBack()
}

// clientLog takes go-redis's own log lines, which it writes to stderr by
// default: during an outage it reports every failed dial, several times a
// second. The store's transitions already say what matters, once, so those
// lines go to the newest store's logger at debug level. go-redis has one
// logger per process.
var (
	clientLog        = new(redisLog)
	installClientLog sync.Once
)

// redisLog is a go-redis logger writing debug lines to a zap logger.
type redisLog struct {
	logger atomic.Pointer[zap.Logger]
}

// Printf implements go-redis's logging interface.
func (l *redisLog) Printf(_ context.Context, format string, v ...any) {
	if lg := l.logger.Load(); lg != nil {
		if ce := lg.Check(zap.DebugLevel, "redis client"); ce != nil {
			ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
		}
	}
}

// Interface guards
var (
	_ policy.SharedStore  = (*Store)(nil)
	_ policy.CircuitStore = (*Store)(nil)
	_ policy.HoldStore    = (*Store)(nil)
)
