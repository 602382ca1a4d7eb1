// Command membench measures the peak memory (resident set size) of a Caddy
// with ai_resilience under hostile request bodies, against a bare
// reverse_proxy. Each scenario runs a fresh Caddy in a child process (this
// same binary, with -serve), so the peak the kernel reports for it (VmHWM in
// /proc/<pid>/status) is that scenario's alone; the mock provider and the
// clients stay in the parent and are not counted.
//
// Scenarios:
//
//	declared  -clients clients each send headers declaring a Content-Length
//	          of -declared bytes, then one byte, and hold the connection
//	          for -hold (a server that sizes its buffer by the declared
//	          length pays for bytes that never come)
//	bodies    -concurrent clients at once each send a whole body of -size
//	          bytes (a valid Messages request) and read the answer
//
//	go run ./cmd/membench                              # both scenarios, bare and guarded
//	go run ./cmd/membench -scenarios bodies -options 'max_buffered 256MB'
//
// Everything listens on 127.0.0.1 only; every client is bounded by a
// timeout, and the child exits when its stdin closes, so it never outlives
// the parent.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	_ "github.com/ai-resilience/caddy-ai-resilience"
	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
)

func main() {
	serve := flag.Bool("serve", false, "internal: run Caddy in front of -upstream and print its port")
	upstream := flag.String("upstream", "", "internal: the upstream address for -serve")
	guarded := flag.Bool("guarded", false, "internal: put ai_resilience in front of the proxy")
	options := flag.String("options", "", "subdirectives for ai_resilience, e.g. 'max_buffered 256MB'")
	scenarios := flag.String("scenarios", "declared,bodies", "comma-separated: declared, bodies")
	clients := flag.Int("clients", 100, "declared: connections declaring a large body")
	declared := flag.Int64("declared", 16_000_000, "declared: the Content-Length each declares")
	hold := flag.Duration("hold", 3*time.Second, "declared: how long the connections are held")
	concurrent := flag.Int("concurrent", 200, "bodies: requests at once")
	size := flag.Int("size", 8<<20, "bodies: bytes per request body")
	flag.Parse()

	if *serve {
		if err := runServer(*upstream, *guarded, *options); err != nil {
			fmt.Fprintln(os.Stderr, "membench -serve:", err)
			os.Exit(1)
		}
		return
	}
	cfg := config{options: *options, clients: *clients, declared: *declared, hold: *hold, concurrent: *concurrent, size: *size}
	switch {
	case cfg.clients < 1 || cfg.clients > 1000:
		fail(fmt.Errorf("-clients %d: use 1 to 1000", cfg.clients))
	case cfg.concurrent < 1 || cfg.concurrent > 1000:
		fail(fmt.Errorf("-concurrent %d: use 1 to 1000", cfg.concurrent))
	case cfg.size < 1024 || cfg.size > 64<<20:
		fail(fmt.Errorf("-size %d: use 1024 to 64MiB", cfg.size))
	case cfg.declared < 2 || cfg.hold <= 0 || cfg.hold > time.Minute:
		fail(errors.New("-declared must be at least 2 and -hold between 0 and 1m"))
	}
	for _, name := range strings.Split(*scenarios, ",") {
		for _, g := range []bool{false, true} {
			r, err := measure(strings.TrimSpace(name), g, cfg)
			if err != nil {
				fail(err)
			}
			fmt.Println(r)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "membench:", err)
	os.Exit(1)
}

type config struct {
	options    string
	clients    int
	declared   int64
	hold       time.Duration
	concurrent int
	size       int
}

// runServer runs Caddy on a free loopback port, prints the port and serves
// until stdin closes.
func runServer(upstream string, guarded bool, options string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	handler := "reverse_proxy " + upstream
	if guarded {
		handler = "route {\n\t\tai_resilience {\n" + options + "\n\t\t}\n\t\treverse_proxy " + upstream + "\n\t}"
	}
	caddyfile := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tstorage file_system %s\n\tlog {\n\t\toutput discard\n\t}\n}\nhttp://127.0.0.1:%d {\n\t%s\n}\n",
		os.TempDir()+"/membench-storage", port, handler)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return fmt.Errorf("adapting: %w", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("loading: %w", err)
	}
	fmt.Println(port)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return caddy.Stop()
}

// child is a running Caddy process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
}

func startChild(upstream string, guarded bool, options string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", "-upstream", upstream, "-guarded="+strconv.FormatBool(guarded), "-options", options)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("waiting for the child's port: %w", err)
	}
	c := &child{cmd: cmd, stdin: stdin, url: "http://127.0.0.1:" + strings.TrimSpace(line)}
	for range 100 {
		if conn, err := net.Dial("tcp", strings.TrimPrefix(c.url, "http://")); err == nil {
			conn.Close()
			return c, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.stop()
	return nil, errors.New("the child never listened")
}

// peakRSS reads the child's resident high-water mark in bytes.
func (c *child) peakRSS() (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

func (c *child) stop() {
	c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// result is one scenario's measurement.
type result struct {
	scenario string
	guarded  bool
	idle     int64
	peak     int64
	statuses map[int]int
	errors   int
	took     time.Duration
}

func (r result) String() string {
	site := "bare   "
	if r.guarded {
		site = "guarded"
	}
	var st []string
	for code, n := range r.statuses {
		st = append(st, fmt.Sprintf("%d×%d", n, code))
	}
	return fmt.Sprintf("%-8s %s  peak RSS %6.0f MB (idle %3.0f MB)  answers %s  client errors %d  in %s",
		r.scenario, site, float64(r.peak)/1e6, float64(r.idle)/1e6, strings.Join(st, " "), r.errors, r.took.Round(time.Millisecond))
}

func measure(scenario string, guarded bool, cfg config) (result, error) {
	mock := httptest.NewServer(mockprovider.New(mockprovider.Options{NoRecord: true}))
	defer mock.Close()
	c, err := startChild(strings.TrimPrefix(mock.URL, "http://"), guarded, cfg.options)
	if err != nil {
		return result{}, err
	}
	defer c.stop()
	r := result{scenario: scenario, guarded: guarded, statuses: map[int]int{}}
	if r.idle, err = c.peakRSS(); err != nil {
		return r, err
	}
	start := time.Now()
	switch scenario {
	case "declared":
		err = declaredClients(c.url, cfg, &r)
	case "bodies":
		err = bigBodies(c.url, cfg, &r)
	default:
		err = fmt.Errorf("unknown scenario %q: use declared or bodies", scenario)
	}
	r.took = time.Since(start)
	if err != nil {
		return r, err
	}
	r.peak, err = c.peakRSS()
	return r, err
}

// declaredClients opens cfg.clients connections that each declare a large
// body, send one byte of it and wait, then measures while they all wait.
func declaredClients(url string, cfg config, r *result) error {
	addr := strings.TrimPrefix(url, "http://")
	conns := make([]net.Conn, 0, cfg.clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range cfg.clients {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(cfg.hold + 30*time.Second))
		if _, err := fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", cfg.declared); err != nil {
			return err
		}
	}
	time.Sleep(cfg.hold)
	r.statuses[0] = len(conns) // none answered while held
	return nil
}

// bigBodies sends cfg.concurrent requests of cfg.size bytes at once.
func bigBodies(url string, cfg config, r *result) error {
	body := messagesBody(cfg.size)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: cfg.concurrent}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx := context.Background()
	for range cfg.concurrent {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/messages", bytes.NewReader(body))
			if err != nil {
				panic(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.errors++
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r.statuses[resp.StatusCode]++
		})
	}
	wg.Wait()
	return nil
}

// messagesBody is a valid Messages request of about size bytes, for a model
// the built-in table does not know, so the context guard leaves it alone.
func messagesBody(size int) []byte {
	return testbody.Body{Model: "membench-model", MaxTokens: 16, Size: size}.Bytes()
}
