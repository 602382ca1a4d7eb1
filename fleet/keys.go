package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Key layout. Every key starts with the prefix inside one hash tag,
// `{<prefix>}:`, so Redis Cluster puts them all in one slot
// (https://redis.io/topics/cluster-spec#hash-tags)
// and accepts a script over any of them. One slot is not a shortcut: a
// zone bucket is shared by every request in the zone, while a request's
// other zones differ from request to request, so any two buckets may meet in
// one script and must live on the same node. One node runs on the order of
// a hundred thousand admissions a second; a cluster still gives the store
// replicas and failover.
//
//	{<prefix>}:zone:<zone>:<key hash>   a zone's two buckets for one key value
//	{<prefix>}:instances                the live instances and their last heartbeats
//	{<prefix>}:circuits                 every model's circuit breaker, a field per model
//	{<prefix>}:pacing                   the pacing holds, "<credential hash> <model>"
//	{<prefix>}:key_fingerprint          which key the instances hash credentials with
//	{<prefix>}:events                   (a pub/sub channel) circuit transitions and holds
//
// A key value (often an API key, a user or a team) never appears in the
// store: the key names its hash, the first 128 bits of SHA-256 in hex.

// keyHashLen is the length of a hashed key value in a key name.
const keyHashLen = 32

// keys builds the store's key names for one prefix.
type keys struct {
	tag string // "{<prefix>}:"
}

func newKeys(prefix string) keys {
	return keys{tag: "{" + prefix + "}:"}
}

// zone names the buckets of zone for the key value whose HashKey is hash.
func (k keys) zone(zone, hash string) string {
	var b strings.Builder
	b.Grow(len(k.tag) + len("zone:") + len(zone) + 1 + len(hash))
	b.WriteString(k.tag)
	b.WriteString("zone:")
	b.WriteString(zone)
	b.WriteByte(':')
	b.WriteString(hash)
	return b.String()
}

// instances names the sorted set of live instances.
func (k keys) instances() string {
	return k.tag + "instances"
}

// circuits names the hash of the fleet's circuits, one field per model.
func (k keys) circuits() string {
	return k.tag + "circuits"
}

// epoch names the store's epoch: an id the sync script sets when the key
// is missing, so that a store that lost its data (a restart without
// persistence, a flush) shows a new one.
func (k keys) epoch() string {
	return k.tag + "epoch"
}

// pacing names the sorted set of the fleet's pacing holds.
func (k keys) pacing() string {
	return k.tag + "pacing"
}

// fingerprint names the fingerprint of the key the fleet hashes keys with.
func (k keys) fingerprint() string {
	return k.tag + "key_fingerprint"
}

// events names the pub/sub channel of circuit transitions and pacing
// holds. A channel is no key and has no slot; it carries the prefix so
// that fleets sharing a store do not hear each other.
func (k keys) events() string {
	return k.tag + "events"
}

// HashKey is how a zone key value is named in the store: the first 128
// bits of its SHA-256, in hex. The same value always has the same hash,
// which is what lets every instance find its buckets, and the hash does not
// reveal the value.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:keyHashLen/2])
}
