package policy

import (
	"fmt"
	"strings"
)

// Fallbacks maps a model to the model tried when it is unavailable. Chains
// come from repeated `fallback <model> <next>...` lines; a model appears in
// at most one chain, once, so following Next always ends.
type Fallbacks struct {
	next map[string]string
}

// NewFallbacks builds the fallback map from chains. Each chain needs at least
// two models, and no model may appear twice across all chains: that would
// make the order ambiguous (or a loop).
func NewFallbacks(chains [][]string) (Fallbacks, error) {
	f := Fallbacks{next: make(map[string]string)}
	seen := make(map[string]int, len(chains)*3)
	for i, chain := range chains {
		if len(chain) < 2 {
			return Fallbacks{}, fmt.Errorf("fallback chain %d (%s) needs at least two models: the model and what to use when it is unavailable", i+1, strings.Join(chain, " "))
		}
		for j, model := range chain {
			if model == "" {
				return Fallbacks{}, fmt.Errorf("fallback chain %d has an empty model name", i+1)
			}
			if prev, dup := seen[model]; dup {
				if prev == i {
					return Fallbacks{}, fmt.Errorf("model %q appears twice in fallback chain %d: a chain cannot loop", model, i+1)
				}
				return Fallbacks{}, fmt.Errorf("model %q appears in fallback chains %d and %d: put it in one chain so its next model is unambiguous", model, prev+1, i+1)
			}
			seen[model] = i
			if j+1 < len(chain) {
				f.next[model] = chain[j+1]
			}
		}
	}
	return f, nil
}

// Next returns the model to try after model, if any.
func (f Fallbacks) Next(model string) (string, bool) {
	next, ok := f.next[model]
	return next, ok
}
