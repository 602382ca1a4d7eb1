package airesilience

import (
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// hashKeyName is where the key of `key_hash` lives in Caddy's storage.
const hashKeyName = "ai_resilience/key_hash.key"

// hashKeySize is the length of a new key: HMAC-SHA256's block is 64 bytes,
// and 32 random bytes are as strong as the hash.
const hashKeySize = 32

// hashKey is the process-wide key of the hash that stands for zone keys
// (API keys, user ids) in logs and state: a keyed hash (HMAC), so nobody can
// confirm a guessed key against a log line without the key. It is loaded
// from Caddy's storage by the first Provision and kept for the life of the
// process, and every instance sharing that storage uses the same one, so a
// key hashes alike across a fleet and across restarts.
var hashKey struct {
	sync.Mutex
	key []byte
}

// loadHashKey returns the process's key, loading it from the context's
// storage, or creating it there, on first use. When storage cannot be used
// the process makes a key of its own and says so: hashes then differ
// between instances, but stay keyed.
func loadHashKey(ctx caddy.Context, logger *zap.Logger) []byte {
	hashKey.Lock()
	defer hashKey.Unlock()
	if hashKey.key != nil {
		return hashKey.key
	}
	key, err := storedHashKey(ctx, ctx.Storage())
	if err != nil {
		logger.Warn("key_hash key not kept in storage; hashes will differ between instances and restarts", zap.Error(err))
		key = make([]byte, hashKeySize)
		_, _ = rand.Read(key) // never fails (crypto/rand, Go 1.24+)
	}
	hashKey.key = key
	return key
}

// storedHashKey loads the key from storage, creating it under the storage's
// lock when it is missing, so that instances starting together agree on
// one key.
func storedHashKey(ctx context.Context, storage certmagic.Storage) ([]byte, error) {
	if storage == nil {
		return nil, errors.New("no storage configured")
	}
	if key, err := storage.Load(ctx, hashKeyName); !errors.Is(err, fs.ErrNotExist) {
		return checkedHashKey(key, err)
	}
	if err := storage.Lock(ctx, hashKeyName); err != nil {
		return nil, err
	}
	defer func() { _ = storage.Unlock(ctx, hashKeyName) }()
	if key, err := storage.Load(ctx, hashKeyName); !errors.Is(err, fs.ErrNotExist) {
		return checkedHashKey(key, err) // another instance made it meanwhile
	}
	key := make([]byte, hashKeySize)
	_, _ = rand.Read(key)
	if err := storage.Store(ctx, hashKeyName, key); err != nil {
		return nil, err
	}
	return key, nil
}

// checkedHashKey accepts a loaded key that is long enough to be a secret.
func checkedHashKey(key []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	if len(key) < 16 {
		return nil, errors.New("the stored key " + hashKeyName + " is shorter than 16 bytes; delete it to have a new one made")
	}
	return key, nil
}
