package airesilience

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/caddyserver/certmagic"
)

// TestStoredHashKeyIsSharedThroughStorage checks that instances sharing
// Caddy's storage agree on one key_hash key, also when they start at once,
// and that the key is kept for the next start.
func TestStoredHashKeyIsSharedThroughStorage(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	keys := make([][]byte, 4)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			// Each instance has its own storage value over the same files.
			key, err := storedHashKey(ctx, &certmagic.FileStorage{Path: dir})
			if err != nil {
				t.Error(err)
			}
			keys[i] = key
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) || len(k) != hashKeySize {
			t.Fatalf("instances got different keys: %x", keys)
		}
	}
	again, err := storedHashKey(ctx, &certmagic.FileStorage{Path: dir})
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("the next start got %x, %v; want the stored key", again, err)
	}
	other, err := storedHashKey(ctx, &certmagic.FileStorage{Path: t.TempDir()})
	if err != nil || bytes.Equal(other, keys[0]) {
		t.Fatalf("another storage got the same key: %x, %v", other, err)
	}

	// A stored value too short to be a secret is refused, not used.
	short := &certmagic.FileStorage{Path: t.TempDir()}
	if err := short.Store(ctx, hashKeyName, []byte("tiny")); err != nil {
		t.Fatal(err)
	}
	if _, err := storedHashKey(ctx, short); err == nil {
		t.Fatal("a 4-byte stored key was accepted")
	}
}
