package testredis

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestServerLifecycle starts a server, kills it, restarts it empty on the
// same address, and pauses it: the operations the chaos tests rely on.
func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	c := s.Client()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := s.Do("PING"); err == nil {
		t.Fatal("a killed server answered PING")
	}
	s.Restart()
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("after a restart: EXISTS k = %d, %v; want an empty server", n, err)
	}

	s.Pause(300 * time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := c.Set(short, "k", "v", 0).Err(); err == nil {
		t.Fatal("a write went through a paused server")
	}
	time.Sleep(300 * time.Millisecond)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
	if calls, _ := s.CommandStats("set"); calls < 1 {
		t.Errorf("commandstats counted %d SET calls", calls)
	}
}

// TestCluster starts a three-node cluster whose nodes agree it is healthy.
func TestCluster(t *testing.T) {
	nodes := StartCluster(t, 3)
	info, err := nodes[0].Client().ClusterInfo(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster_state:ok", "cluster_known_nodes:3", "cluster_slots_assigned:16384"} {
		if !strings.Contains(info, want) {
			t.Errorf("CLUSTER INFO lacks %q:\n%s", want, info)
		}
	}
}
