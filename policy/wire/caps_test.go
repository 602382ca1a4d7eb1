package wire

import (
	"slices"
	"testing"
)

func TestOutputCapFields(t *testing.T) {
	for _, tc := range []struct {
		api  API
		want []string
	}{
		{Messages, []string{"max_tokens"}},
		{ChatCompletions, []string{"max_completion_tokens", "max_tokens"}},
		{Responses, []string{"max_output_tokens"}},
		{Completions, []string{"max_tokens"}},
		{Embeddings, nil},
		{Passthrough, nil},
	} {
		var got []string
		for _, f := range tc.api.CapFields() {
			got = append(got, f.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s CapFields = %v, want %v", tc.api.Name(), got, tc.want)
		}
	}
}
