package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/caddyproc"
	"github.com/ai-resilience/caddy-ai-resilience/internal/proc"
)

// redisPlaceholder, in a configuration flag, starts a redis-server and
// stands for its URL.
const redisPlaceholder = "{redis}"

// startTimeout bounds how long a helper process may take to serve.
const startTimeout = 30 * time.Second

// stack is everything a run starts: the mock provider, perhaps a
// redis-server, the two Caddy processes, and the load generators.
type stack struct {
	o        options
	tmp      string
	caddyBin string

	mock    *proc.Child
	mockURL string
	redis   *proc.Child
	// redisURL is the redis-server's URL, or empty when none runs.
	redisURL string

	a, b *side

	gwCPUs, loadCPUs []int
	gen              loadGen
	goc              *goClient
}

// side is one of the two Caddy processes being compared.
type side struct {
	label string
	// options is the ai_resilience block's body, or empty for bare Caddy.
	options string
	global  string
	p       *caddyproc.Process
}

// startStack builds the binaries and starts every process, each pinned.
func startStack(o options) (st *stack, err error) {
	st = &stack{o: o}
	defer func() {
		if err != nil {
			st.stop()
		}
	}()
	if o.gatewayCPUs != "" {
		st.gwCPUs, _ = parseCPUList(o.gatewayCPUs)
		st.loadCPUs, _ = parseCPUList(o.loadCPUs)
	}
	if st.tmp, err = os.MkdirTemp("", "loadbench-"); err != nil {
		return st, err
	}
	if o.caddyBin == "" || o.mockBin == "" {
		fmt.Println("loadbench: building cmd/caddy and cmd/mockprovider ...")
	}
	st.caddyBin = o.caddyBin
	if st.caddyBin == "" {
		if st.caddyBin, err = caddyproc.Binary(); err != nil {
			return st, err
		}
	}
	mockBin := o.mockBin
	if mockBin == "" {
		if mockBin, err = proc.Build("./cmd/mockprovider", ""); err != nil {
			return st, err
		}
	}
	if err = st.startMock(mockBin); err != nil {
		return st, err
	}
	configs := []string{o.options, o.global, o.baseline, o.baselineGlobal}
	for _, c := range configs {
		if strings.Contains(c, redisPlaceholder) {
			if err = st.startRedis(); err != nil {
				return st, err
			}
			break
		}
	}
	st.a = &side{label: "bare"}
	st.b = &side{label: "guarded", options: st.expand(o.options), global: st.expand(o.global)}
	if o.baseline != bare {
		st.a = &side{label: "A", options: st.expand(o.baseline), global: st.expand(o.baselineGlobal)}
		st.b.label = "B"
	}
	for _, sd := range []*side{st.a, st.b} {
		if err = st.startCaddy(sd); err != nil {
			return st, err
		}
	}
	st.goc = newGoClient()
	st.gen = st.goc
	if o.client == "wrk" {
		st.gen = &wrk{dir: st.tmp, cpus: o.loadCPUs}
	}
	return st, nil
}

// expand puts the redis-server's URL in place of its placeholder.
func (st *stack) expand(config string) string {
	return strings.ReplaceAll(config, redisPlaceholder, st.redisURL)
}

// startMock runs cmd/mockprovider on a port it picks itself, and reads the
// address from the line it prints when it listens.
func (st *stack) startMock(bin string) error {
	cmd := proc.Command(st.o.loadCPUs, bin, "-addr", "127.0.0.1:0", "-quiet")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if st.mock, err = proc.Start(cmd); err != nil {
		return fmt.Errorf("starting the mock provider: %w", err)
	}
	lines := bufio.NewScanner(out)
	found := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if _, url, ok := strings.Cut(lines.Text(), "listening on "); ok {
				found <- strings.TrimSpace(url)
				break
			}
		}
		// Keep reading, so the mock never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case st.mockURL = <-found:
		return nil
	case <-time.After(startTimeout):
		return errors.New("the mock provider did not say where it listens")
	}
}

// startRedis runs a redis-server on a free loopback port, with the load,
// without persistence, and waits until it answers PING.
func (st *stack) startRedis() error {
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	dir := filepath.Join(st.tmp, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := proc.Command(st.o.loadCPUs, "redis-server",
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--maxmemory", "256mb",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no")
	if st.redis, err = proc.Start(cmd); err != nil {
		return fmt.Errorf("starting redis-server (apt-get install redis-server): %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(startTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ping(addr) {
			st.redisURL = "redis://" + addr
			return nil
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	return fmt.Errorf("redis-server on %s did not answer PING:\n%s", addr, log)
}

// ping sends one inline PING and reports whether +PONG came back.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// startCaddy runs one side's Caddy, pinned to the gateway CPUs, with the
// admin API on a loopback port for profiles.
func (st *stack) startCaddy(sd *side) error {
	site := "\treverse_proxy " + st.mockURL
	if sd.options != "" {
		site = fmt.Sprintf("\troute {\n\t\tai_resilience {\n%s\n\t\t}\n\t\treverse_proxy %s\n\t}", indent(sd.options, "\t\t\t"), st.mockURL)
	}
	dir := filepath.Join(st.tmp, sd.label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p, err := caddyproc.Start(st.caddyBin, dir, caddyproc.Instance{Global: indent(sd.global, "\t"), Site: site, Admin: true, CPUs: st.o.gatewayCPUs})
	if err != nil {
		return fmt.Errorf("starting the %s Caddy: %w", sd.label, err)
	}
	sd.p = p
	return nil
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = prefix + strings.TrimSpace(l)
	}
	return strings.Join(lines, "\n")
}

// stop ends every process the stack started and removes its files.
func (st *stack) stop() {
	for _, sd := range []*side{st.a, st.b} {
		if sd != nil && sd.p != nil {
			sd.p.Stop()
		}
	}
	for _, c := range []*proc.Child{st.mock, st.redis} {
		if c != nil {
			c.Stop(5 * time.Second)
		}
	}
	if st.goc != nil {
		st.goc.close()
	}
	if st.tmp != "" {
		_ = os.RemoveAll(st.tmp)
	}
}
