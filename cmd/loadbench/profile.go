package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profile runs one more load turn on each site, not counted in any round,
// while fetching a CPU profile of its Caddy from the admin API
// (/debug/pprof/profile, Go's net/http/pprof), writes the profiles to the
// -profile directory and prints the top entries of B's, by flat and by
// cumulative time. Profiling costs the process a little CPU, which is why
// its turn stays out of the rounds.
func (st *stack) profile(s scenario) error {
	if err := os.MkdirAll(st.o.profileDir, 0o755); err != nil {
		return fmt.Errorf("creating the profile directory: %w", err)
	}
	secs := max(1, int(st.o.duration/time.Second))
	var paths []string
	for _, sd := range []*side{st.a, st.b} {
		path := filepath.Join(st.o.profileDir, s.name+"-"+sd.label+".pprof")
		if err := st.profileSide(sd, s, secs, path); err != nil {
			return fmt.Errorf("profiling the %s Caddy: %w", sd.label, err)
		}
		paths = append(paths, path)
	}
	fmt.Printf("  CPU profiles of one extra load turn (%ds, %d connections, not counted): %s\n", secs, st.o.conns, strings.Join(paths, ", "))
	for _, sortBy := range []string{"flat", "cum"} {
		args := []string{"tool", "pprof", "-top", "-nodecount", fmt.Sprint(st.o.profileTop)}
		if sortBy == "cum" {
			args = append(args, "-cum")
		}
		out, err := exec.Command("go", append(args, paths[1])...).CombinedOutput()
		if err != nil {
			fmt.Printf("  go tool pprof could not read %s: %v\n%s", paths[1], err, out)
			return nil
		}
		fmt.Printf("  %s Caddy, top %d by %s time:\n", st.b.label, st.o.profileTop, sortBy)
		for line := range strings.SplitSeq(strings.TrimRight(string(out), "\n"), "\n") {
			fmt.Println("    " + line)
		}
	}
	return nil
}

// profileSide loads one site for secs plus a second, and fetches a profile
// of secs from its middle.
func (st *stack) profileSide(sd *side, s scenario, secs int, path string) error {
	loaded := make(chan error, 1)
	go func() {
		_, err := st.gen.run(sd.p.URL, s, s.script, st.o.conns, time.Duration(secs+1)*time.Second)
		loaded <- err
	}()
	time.Sleep(500 * time.Millisecond)
	client := &http.Client{Timeout: time.Duration(secs+30) * time.Second}
	resp, err := client.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", sd.p.AdminURL, secs))
	if err != nil {
		return errors.Join(err, <-loaded)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if lerr := <-loaded; lerr != nil {
		return lerr
	}
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	return os.WriteFile(path, raw, 0o644)
}
