package policy

import (
	"fmt"
	"sort"
	"strings"
)

// ModelFacts are the limits of one model that the guards enforce. Zero
// means unknown: a guard with an unknown limit lets the request through and
// leaves the judgement to the provider.
type ModelFacts struct {
	// ContextWindow is the most tokens of input plus output the model takes.
	ContextWindow int64
	// MaxOutput is the largest output cap the model accepts.
	MaxOutput int64
}

// builtinModels are the facts the gateway ships with, compiled in November
// 2026 from the providers' model pages
// (https://docs.anthropic.com/en/docs/about-claude/models/overview) and the
// SDKs' model constants; entries no published source confirms are marked
// UNVERIFIED. A name ending in `*` matches as a prefix, which is how dated
// snapshots (claude-haiku-4-5-20251001, gpt-5-2025-08-07) find their family.
// Prefixes stop at a family boundary on purpose: a catch-all such as `gpt-5*`
// would hand gpt-5's 400K window to a newer 1M model and make the context
// guard refuse requests the provider accepts. A model missing here is not
// guarded; `model <name> { ... }` in the Caddyfile adds or corrects one.
var builtinModels = []ModelOverride{
	// Anthropic (platform.claude.com models overview).
	{"claude-fable-5-1*", 1_000_000, 128_000},
	{"claude-opus-5-5*", 1_000_000, 128_000},
	{"claude-sonnet-5-5*", 1_000_000, 128_000},
	{"claude-haiku-5-5*", 1_000_000, 128_000},
	{"claude-fable-5*", 1_000_000, 128_000},
	{"claude-opus-5*", 1_000_000, 128_000},   // legacy since 2026-07-24
	{"claude-sonnet-5*", 1_000_000, 128_000}, // legacy since 2026-06-30
	{"claude-opus-4-8*", 1_000_000, 128_000}, // UNVERIFIED: listed in the SDK, limits not published
	{"claude-opus-4-7*", 1_000_000, 128_000}, // UNVERIFIED: listed in the SDK, limits not published
	{"claude-opus-4-6*", 1_000_000, 128_000},
	{"claude-sonnet-4-6*", 1_000_000, 128_000},
	{"claude-opus-4-5*", 200_000, 64_000},
	{"claude-haiku-4-5*", 200_000, 64_000},
	// 1M with the context-1m beta header, which the guard cannot see:
	// configure `model claude-sonnet-4-5* { context_window 1000000 }`
	// when clients use it.
	{"claude-sonnet-4-5*", 200_000, 64_000},

	// OpenAI (ids from openai-go v3.96 ChatModel; limits from third-party
	// model catalogues, as OpenAI's model pages could not be consulted).
	{"gpt-6-sol*", 1_050_000, 128_000},
	{"gpt-6.1-sol*", 1_050_000, 128_000},
	{"gpt-6.2-sol*", 1_050_000, 128_000},
	{"gpt-5.5*", 1_050_000, 128_000}, // sources conflict (one lists 1M / 272K); UNVERIFIED
	{"gpt-5.4*", 1_050_000, 128_000}, // "~1M" in the sources; the larger figure avoids false rejections
	{"gpt-5.2*", 400_000, 128_000},   // no published source found; UNVERIFIED
	{"gpt-5.1", 400_000, 128_000},
	{"gpt-5.1-2025*", 400_000, 128_000},
	{"gpt-5.1-chat-latest", 128_000, 16_384},
	{"gpt-5", 400_000, 128_000},
	{"gpt-5-2025*", 400_000, 128_000},
	{"gpt-5-mini*", 400_000, 128_000}, // UNVERIFIED: as gpt-5
	{"gpt-5-nano*", 400_000, 128_000}, // UNVERIFIED: as gpt-5
	{"gpt-5-chat-latest", 128_000, 16_384},
	{"gpt-4.1*", 1_047_576, 32_768}, // UNVERIFIED (from memory); covers -mini and -nano
	{"gpt-4o*", 128_000, 16_384},    // covers gpt-4o-mini and dated snapshots
	{"o3*", 200_000, 100_000},       // covers o3-mini, o3-pro and dated snapshots
	{"o4-mini*", 200_000, 100_000},
}

// ModelOverride is one `model <name> { context_window <n>; max_output <n> }`
// entry. Name matches a model id exactly or, ending in `*`, as a prefix.
// A zero ContextWindow or MaxOutput is not set: it is taken from the
// built-in table.
type ModelOverride struct {
	Name          string
	ContextWindow int64
	MaxOutput     int64
}

// ModelTable answers what the gateway knows about a model: the built-in
// facts, with the configured overrides laid over them. The zero value holds
// the built-in facts only. It is immutable after NewModelTable and safe for
// concurrent use.
type ModelTable struct {
	overrides *modelIndex
}

// modelIndex is a set of entries indexed for lookup: exact names in a map,
// prefixes longest first so the first match is the longest.
type modelIndex struct {
	exact  map[string]ModelFacts
	prefix []prefixFacts
}

type prefixFacts struct {
	prefix string
	facts  ModelFacts
}

var builtinIndex = mustIndex(builtinModels)

// NewModelTable returns the built-in table with overrides laid over it.
// Overrides win field by field: for a model matched by an override, each
// limit the override sets replaces the built-in one, and each it leaves
// unset still comes from the built-in entry that matches the model, if any.
// So `model claude-* { context_window 100000 }` lowers the window of every
// Claude model while keeping each one's own max_output. Among overrides, as
// among built-ins, an exact name beats a prefix and the longest prefix wins.
func NewModelTable(overrides []ModelOverride) (ModelTable, error) {
	if len(overrides) == 0 {
		return ModelTable{}, nil
	}
	idx, err := newModelIndex(overrides)
	if err != nil {
		return ModelTable{}, err
	}
	return ModelTable{overrides: idx}, nil
}

func mustIndex(entries []ModelOverride) *modelIndex {
	idx, err := newModelIndex(entries)
	if err != nil {
		panic(err)
	}
	return idx
}

// Check reports an entry that cannot describe a model.
func (e ModelOverride) Check() error {
	name := e.Name
	switch {
	case name == "" || name == "*":
		return fmt.Errorf("model %q: give a model id, or an id prefix ending in * such as claude-opus-4-5*", name)
	case strings.Contains(strings.TrimSuffix(name, "*"), "*"):
		return fmt.Errorf("model %q: * may only end the name, where it matches any suffix", name)
	case e.ContextWindow < 0 || e.MaxOutput < 0:
		return fmt.Errorf("model %q: context_window and max_output must be positive token counts", name)
	case e.ContextWindow == 0 && e.MaxOutput == 0:
		return fmt.Errorf("model %q: set context_window, max_output or both", name)
	case e.ContextWindow > 0 && e.MaxOutput > e.ContextWindow:
		return fmt.Errorf("model %q: max_output %d is larger than context_window %d", name, e.MaxOutput, e.ContextWindow)
	}
	return nil
}

func newModelIndex(entries []ModelOverride) (*modelIndex, error) {
	idx := &modelIndex{exact: make(map[string]ModelFacts)}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		name := e.Name
		if err := e.Check(); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("model %q is configured twice: merge the two blocks", name)
		}
		seen[name] = true
		facts := ModelFacts{ContextWindow: e.ContextWindow, MaxOutput: e.MaxOutput}
		if p, ok := strings.CutSuffix(name, "*"); ok {
			idx.prefix = append(idx.prefix, prefixFacts{p, facts})
		} else {
			idx.exact[name] = facts
		}
	}
	sort.SliceStable(idx.prefix, func(i, j int) bool { return len(idx.prefix[i].prefix) > len(idx.prefix[j].prefix) })
	return idx, nil
}

// lookup finds model's entry: the exact one, else the longest prefix.
func (idx *modelIndex) lookup(model string) (ModelFacts, bool) {
	if f, ok := idx.exact[model]; ok {
		return f, true
	}
	for _, p := range idx.prefix {
		if strings.HasPrefix(model, p.prefix) {
			return p.facts, true
		}
	}
	return ModelFacts{}, false
}

// Lookup returns what is known about model. ok is false when neither the
// overrides nor the built-in table match it. It does not allocate.
func (t ModelTable) Lookup(model string) (ModelFacts, bool) {
	facts, ok := builtinIndex.lookup(model)
	if t.overrides == nil {
		return facts, ok
	}
	over, found := t.overrides.lookup(model)
	if !found {
		return facts, ok
	}
	if over.ContextWindow > 0 {
		facts.ContextWindow = over.ContextWindow
	}
	if over.MaxOutput > 0 {
		facts.MaxOutput = over.MaxOutput
	}
	return facts, true
}
