package policy

import (
	"strings"
	"testing"
)

func TestBuiltinModels(t *testing.T) {
	var table ModelTable // the zero value holds the built-ins
	for _, tc := range []struct {
		model          string
		window, output int64
	}{
		{"claude-haiku-4-5", 200_000, 64_000},
		{"claude-haiku-4-5-20251001", 200_000, 64_000}, // dated id by prefix
		{"claude-opus-4-5-20251101", 200_000, 64_000},
		{"claude-sonnet-4-5-20250929", 200_000, 64_000},
		{"claude-sonnet-4-6", 1_000_000, 128_000},
		{"claude-opus-4-6", 1_000_000, 128_000},
		{"claude-fable-5-1", 1_000_000, 128_000},
		{"claude-fable-5", 1_000_000, 128_000},
		{"claude-opus-5-5", 1_000_000, 128_000},
		{"gpt-6.1-sol", 1_050_000, 128_000},
		{"gpt-5", 400_000, 128_000},
		{"gpt-5-2025-08-07", 400_000, 128_000},
		{"gpt-5-mini", 400_000, 128_000},
		{"gpt-5-chat-latest", 128_000, 16_384},
		{"gpt-5.1", 400_000, 128_000},
		{"gpt-5.1-chat-latest", 128_000, 16_384},
		{"gpt-5.5-pro", 1_050_000, 128_000},
		{"gpt-4.1-mini", 1_047_576, 32_768},
		{"gpt-4o", 128_000, 16_384},
		{"gpt-4o-mini-2024-07-18", 128_000, 16_384},
		{"o3", 200_000, 100_000},
		{"o4-mini", 200_000, 100_000},
	} {
		f, ok := table.Lookup(tc.model)
		if !ok || f.ContextWindow != tc.window || f.MaxOutput != tc.output {
			t.Errorf("Lookup(%q) = %+v, %v; want window %d, max output %d", tc.model, f, ok, tc.window, tc.output)
		}
	}
	// Unknown models, and newer family members that must not inherit an
	// older sibling's smaller window, are not guarded.
	for _, model := range []string{"", "llama-3", "claude-opus-4-9", "claude-3-5-haiku-20241022", "gpt-5.6-sol", "gpt-5-codex", "gpt-6-luna"} {
		if f, ok := table.Lookup(model); ok {
			t.Errorf("Lookup(%q) = %+v, want unknown", model, f)
		}
	}
}

func TestBuiltinModelsAreConsistent(t *testing.T) {
	for _, m := range builtinModels {
		if m.ContextWindow <= 0 || m.MaxOutput <= 0 || m.MaxOutput > m.ContextWindow {
			t.Errorf("built-in %q has window %d, max output %d", m.Name, m.ContextWindow, m.MaxOutput)
		}
	}
}

func TestModelTableMatching(t *testing.T) {
	table, err := NewModelTable([]ModelOverride{
		{Name: "acme-*", ContextWindow: 8_000, MaxOutput: 1_000},
		{Name: "acme-large-*", ContextWindow: 32_000, MaxOutput: 4_000},
		{Name: "acme-large-2", ContextWindow: 64_000, MaxOutput: 8_000},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model  string
		window int64
		ok     bool
	}{
		{"acme-small", 8_000, true},         // prefix
		{"acme-large-1", 32_000, true},      // longest prefix wins
		{"acme-large-2", 64_000, true},      // exact beats prefix
		{"acme-large-2-x", 32_000, true},    // exact does not match as a prefix
		{"acme-", 8_000, true},              // the prefix itself
		{"acme", 0, false},                  // shorter than the prefix
		{"ACME-small", 0, false},            // ids are case-sensitive
		{"claude-haiku-4-5", 200_000, true}, // built-ins still answer
	} {
		f, ok := table.Lookup(tc.model)
		if ok != tc.ok || f.ContextWindow != tc.window {
			t.Errorf("Lookup(%q) = %+v, %v; want window %d, %v", tc.model, f, ok, tc.window, tc.ok)
		}
	}
}

func TestModelOverridesLayOverBuiltins(t *testing.T) {
	table, err := NewModelTable([]ModelOverride{
		{Name: "claude-haiku-4-5", MaxOutput: 8_192},               // only max_output: window from the built-in
		{Name: "claude-*", ContextWindow: 100_000},                 // a broad override still wins over built-ins
		{Name: "gpt-4o*", ContextWindow: 64_000, MaxOutput: 4_096}, // replaces the built-in entry
		{Name: "my-model", ContextWindow: 50_000},                  // new model, output unknown
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model string
		want  ModelFacts
	}{
		{"claude-haiku-4-5", ModelFacts{200_000, 8_192}},
		{"claude-haiku-4-5-20251001", ModelFacts{100_000, 64_000}},
		{"claude-opus-4-6", ModelFacts{100_000, 128_000}},
		{"claude-unreleased", ModelFacts{100_000, 0}},
		{"gpt-4o-mini", ModelFacts{64_000, 4_096}},
		{"my-model", ModelFacts{50_000, 0}},
		{"o3", ModelFacts{200_000, 100_000}},
	} {
		f, ok := table.Lookup(tc.model)
		if !ok || f != tc.want {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", tc.model, f, ok, tc.want)
		}
	}
	if _, ok := table.Lookup("unknown"); ok {
		t.Error("an unknown model matched")
	}
}

func TestNewModelTableRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    []ModelOverride
		want string
	}{
		{"empty name", []ModelOverride{{Name: "", ContextWindow: 1}}, "give a model id"},
		{"bare star", []ModelOverride{{Name: "*", ContextWindow: 1}}, "give a model id"},
		{"inner star", []ModelOverride{{Name: "gpt-*-mini", ContextWindow: 1}}, "may only end"},
		{"nothing set", []ModelOverride{{Name: "m"}}, "set context_window"},
		{"negative", []ModelOverride{{Name: "m", ContextWindow: -1}}, "positive"},
		{"output over window", []ModelOverride{{Name: "m", ContextWindow: 10, MaxOutput: 20}}, "larger than context_window"},
		{"duplicate", []ModelOverride{{Name: "m", ContextWindow: 1}, {Name: "m", MaxOutput: 1}}, "twice"},
	} {
		_, err := NewModelTable(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestModelLookupDoesNotAllocate(t *testing.T) {
	table, err := NewModelTable([]ModelOverride{{Name: "claude-*", ContextWindow: 100_000}})
	if err != nil {
		t.Fatal(err)
	}
	model := string([]byte("claude-haiku-4-5-20251001"))
	if n := testing.AllocsPerRun(100, func() { table.Lookup(model) }); n != 0 {
		t.Errorf("Lookup allocates %.0f times, want 0", n)
	}
}

func BenchmarkModelLookup(b *testing.B) {
	table, _ := NewModelTable([]ModelOverride{{Name: "acme-*", ContextWindow: 8_000}})
	b.ReportAllocs()
	for b.Loop() {
		table.Lookup("claude-haiku-4-5-20251001")
	}
}
