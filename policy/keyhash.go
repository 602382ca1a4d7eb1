package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
)

// KeyHash identifies a key (a zone key, an API key) in logs and reported
// state without writing it: keys are often API keys or user ids. It is
// HMAC-SHA256 under secret, truncated to 64 bits, in hex: without the
// secret, a log line cannot confirm a guessed API key (a plain hash of a
// low-entropy id could be reversed by trying candidates), and instances
// that share the secret hash alike. The empty key hashes to "".
func KeyHash(secret []byte, key string) string {
	if key == "" {
		return ""
	}
	m := hmac.New(sha256.New, secret)
	_, _ = io.WriteString(m, key)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0])[:8])
}
