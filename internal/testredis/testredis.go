// Package testredis runs real redis-server processes on loopback for tests:
// one server, or a small Redis Cluster, each on free ports, with no
// persistence and bounded memory, stopped when the test ends. A server can
// be killed, restarted and paused, so tests can show what the gateway does
// when its store goes away.
//
// When redis-server is not installed the test is skipped, except under
// CI=true, where a missing server is a broken build and the test fails.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/ai-resilience/caddy-ai-resilience/internal/proc"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testproc"
)

// startTimeout bounds how long a server may take to accept commands.
const startTimeout = 10 * time.Second

// Server is one redis-server process.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	// URL is the redis:// URL of the server.
	URL string

	t     testing.TB
	dir   string
	args  []string
	mu    sync.Mutex
	child *proc.Child
}

// binary returns the path of redis-server, skipping the test when it is
// missing, or failing it under CI, where the build must install it.
func binary(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("redis-server is not installed (CI=true): %v; install it with apt-get install -y redis-server", err)
	}
	t.Skipf("redis-server is not installed: %v", err)
	return ""
}

// Start runs a standalone redis-server on a free loopback port. It is
// killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, binary(t), nil)
}

// start runs redis-server with extra arguments, retrying on another port
// when the free port it picked was taken in the meantime.
func start(t testing.TB, bin string, extra []string) *Server {
	t.Helper()
	var lastErr error
	for range 3 {
		port := testproc.FreePort(t)
		dir := t.TempDir()
		s := &Server{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			t:    t,
			dir:  dir,
		}
		s.URL = "redis://" + s.Addr
		s.args = append([]string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--maxmemory", "64mb",
			"--dir", dir,
			"--logfile", filepath.Join(dir, "redis.log"),
			"--daemonize", "no",
		}, extra...)
		if lastErr = s.launch(bin); lastErr == nil {
			t.Cleanup(s.Kill)
			return s
		}
	}
	t.Fatalf("starting redis-server: %v", lastErr)
	return nil
}

// launch starts the process and waits until it answers PING.
func (s *Server) launch(bin string) error {
	child, err := proc.Start(proc.Command("", bin, s.args...))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.child = child
	s.mu.Unlock()
	if err := s.awaitPing(child.Exited()); err != nil {
		s.Kill()
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("%w\n%s", err, log)
	}
	return nil
}

// awaitPing polls the server until it answers, it exits, or time is up.
func (s *Server) awaitPing(exited <-chan struct{}) error {
	c := s.client()
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited at start", s.Addr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer within %v: %w", s.Addr, startTimeout, err)
		}
	}
}

// Kill stops the server at once, as a crash would, and waits for it to
// exit. Its data is gone: nothing is persisted.
func (s *Server) Kill() {
	s.mu.Lock()
	child := s.child
	s.child = nil
	s.mu.Unlock()
	if child != nil {
		child.Kill()
	}
}

// Restart starts a killed server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	running := s.child != nil
	s.mu.Unlock()
	if running {
		s.t.Fatalf("restarting redis-server on %s: it is still running", s.Addr)
	}
	if err := s.launch(binary(s.t)); err != nil {
		s.t.Fatalf("restarting redis-server: %v", err)
	}
}

// Pause holds every client's commands for d (CLIENT PAUSE … ALL), the way
// a store stalled by a slow disk, a failover or a long script would.
func (s *Server) Pause(d time.Duration) {
	s.t.Helper()
	if err := s.Do("CLIENT", "PAUSE", strconv.FormatInt(d.Milliseconds(), 10), "ALL"); err != nil {
		s.t.Fatalf("pausing redis-server: %v", err)
	}
}

// Do runs one command and reports its error.
func (s *Server) Do(args ...any) error {
	c := s.client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Do(ctx, args...).Err()
}

// Client returns a client of the server for the test to inspect it; it is
// closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := s.client()
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// client returns a new client of the server with no retries, so that a
// test sees every failure.
func (s *Server) client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                     s.Addr,
		MaxRetries:               -1,
		DialerRetries:            1,
		ContextTimeoutEnabled:    true,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// CommandStats returns the calls and the microseconds of server CPU the
// server has spent in a command since its statistics were last reset
// (INFO commandstats), e.g. CommandStats("evalsha").
func (s *Server) CommandStats(command string) (calls, usec int64) {
	s.t.Helper()
	c := s.client()
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		s.t.Fatalf("reading commandstats: %v", err)
	}
	prefix := "cmdstat_" + strings.ToLower(command) + ":"
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
		if !ok {
			continue
		}
		for field := range strings.SplitSeq(rest, ",") {
			name, value, _ := strings.Cut(field, "=")
			switch name {
			case "calls":
				calls, _ = strconv.ParseInt(value, 10, 64)
			case "usec":
				usec, _ = strconv.ParseInt(value, 10, 64)
			}
		}
	}
	return calls, usec
}

// StartCluster runs a Redis Cluster of n primaries (no replicas) on
// loopback, its slots spread over the nodes, and waits until it serves.
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	bin := binary(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli, which creates the cluster, is not installed: %v", err)
	}
	nodes := make([]*Server, n)
	addrs := make([]string, n)
	for i := range nodes {
		conf := filepath.Join(t.TempDir(), "nodes.conf")
		nodes[i] = start(t, bin, []string{"--cluster-enabled", "yes", "--cluster-config-file", conf, "--cluster-node-timeout", "2000"})
		addrs[i] = nodes[i].Addr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	out, err := exec.CommandContext(ctx, cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("creating the cluster: %v\n%s", err, out)
	}
	for _, node := range nodes {
		node.awaitCluster(ctx)
	}
	return nodes
}

// awaitCluster waits until the node reports the cluster healthy.
func (s *Server) awaitCluster(ctx context.Context) {
	s.t.Helper()
	c := s.client()
	defer c.Close()
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("cluster node %s is not ready: %v %s", s.Addr, err, info)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
