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
				return Fallbacks{}, &RepeatedModelError{Model: model, Chain: i, Earlier: prev}
			}
			seen[model] = i
			if j+1 < len(chain) {
				f.next[model] = chain[j+1]
			}
		}
	}
	return f, nil
}

// RepeatedModelError is a model named twice across the fallback chains:
// that would make its next model ambiguous, or a chain loop.
type RepeatedModelError struct {
	Model string
	// Chain and Earlier index the chains (from 0) where it appears again
	// and first; they are equal for a model twice in one chain.
	Chain, Earlier int
}

func (e *RepeatedModelError) Error() string {
	if e.Chain == e.Earlier {
		return fmt.Sprintf("model %q appears twice in fallback chain %d: a chain cannot loop", e.Model, e.Chain+1)
	}
	return fmt.Sprintf("model %q appears in fallback chains %d and %d: put it in one chain so its next model is unambiguous", e.Model, e.Earlier+1, e.Chain+1)
}

// Next returns the model to try after model, if any.
func (f Fallbacks) Next(model string) (string, bool) {
	next, ok := f.next[model]
	return next, ok
}
