package fleet

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// slot is Redis Cluster's slot of a key: CRC16 (XMODEM) of the key, or of
// its hash tag, the text inside the first {…} when not empty, modulo 16384
// (https://redis.io/topics/cluster-spec#key-distribution-model).
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// TestSlotMatchesRedis checks the slot function against the cluster
// specification's example.
func TestSlotMatchesRedis(t *testing.T) {
	if got := slot("123456789"); got != 12739 {
		t.Errorf("slot(123456789) = %d, want 12739", got)
	}
	if slot("{user1000}.following") != slot("{user1000}.followers") {
		t.Error("keys with one hash tag must share a slot")
	}
}

// TestKeyLayout checks the names the store writes: every key of any request
// (zones of any name and key value, and the live instances) is in one
// cluster slot, so Redis Cluster runs the multi-key scripts; every key
// starts with the prefix in a hash tag; no key value appears in clear.
func TestKeyLayout(t *testing.T) {
	k := newKeys("ai_resilience")
	secret := "sk-ant-api03-SECRET"
	names := []string{
		k.instances(),
		k.zone("org", HashKey("")),
		k.zone("team", HashKey("red")),
		k.zone("per-key", HashKey(secret)),
		k.zone("zone with spaces {and braces}", HashKey("x")),
	}
	want := slot(names[0])
	for _, n := range names {
		if !strings.HasPrefix(n, "{ai_resilience}:") {
			t.Errorf("%q does not start with the hash-tagged prefix", n)
		}
		if s := slot(n); s != want {
			t.Errorf("%q is in slot %d, not %d with the others", n, s, want)
		}
		if strings.Contains(n, secret) || strings.Contains(n, ":red") {
			t.Errorf("%q holds a key value in clear", n)
		}
	}
	if h := HashKey(secret); len(h) != keyHashLen || h == HashKey(secret+"x") {
		t.Errorf("HashKey = %q", h)
	}
	if err := checkPrefix("a{b"); err == nil {
		t.Error("a prefix with a brace was accepted")
	}
}

// TestClusterRunsMultiZoneScripts runs a three-node Redis Cluster and puts
// requests in three zones at once, settles them and sends heartbeats: a
// key layout that split a request's keys across slots would fail with
// CROSSSLOT, and the store would be marked down.
func TestClusterRunsMultiZoneScripts(t *testing.T) {
	nodes := testredis.StartCluster(t, 3)
	s, err := New(Config{
		URLs:    []string{nodes[0].URL, nodes[1].URL, nodes[2].URL},
		Prefix:  "cluster",
		Timeout: time.Second,
		Cluster: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	org := zone(t, s, policy.ZoneConfig{Name: "org", RPM: 1000, TPM: 1_000_000})
	team := zone(t, s, policy.ZoneConfig{Name: "team", RPM: 3})
	user := zone(t, s, policy.ZoneConfig{Name: "user", TPM: 100_000})
	for i := range 4 {
		demands := []policy.Demand{{Zone: org}, {Zone: team, Key: "blue"}, {Zone: user, Key: string(rune('a' + i))}}
		a, _, r := policy.Admit(demands, 500, 0, time.Now())
		if (r == nil) != (i < 3) {
			t.Fatalf("request %d: refusal %+v; want 3 admitted by team's rpm 3", i, r)
		}
		a.Settle(100, time.Now())
	}
	if s.Health().Down {
		t.Fatal("the store was marked down")
	}
	// Every key landed on one node.
	holding := 0
	for _, n := range nodes {
		if keys, _ := n.Client().Keys(context.Background(), "*").Result(); len(keys) > 0 {
			holding++
		}
	}
	if holding != 1 {
		t.Errorf("%d nodes hold keys, want 1", holding)
	}
	await(t, time.Second, "the settlements in the cluster", func() bool {
		return org.Status("", time.Now()).TokensRemaining >= 1_000_000-3*100-50
	})
	if s.Health().Down {
		t.Fatal("the store was marked down")
	}
}
