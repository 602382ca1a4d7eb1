package policy

import "testing"

// TestDetectCleansThePath checks that every spelling of an API path that a
// router cleans to it is detected as that API, and that the paths of other
// operations stay pass-through however they are spelled.
func TestDetectCleansThePath(t *testing.T) {
	for _, c := range []struct {
		provider Provider
		path     string
		d        Dialect
		e        Endpoint
	}{
		{Auto, "/v1/messages", Anthropic, Messages},
		{Auto, "/v1/messages/", Anthropic, Messages},
		{Auto, "/v1/x/../messages", Anthropic, Messages},
		{Auto, "/v1/./messages", Anthropic, Messages},
		{Auto, "//v1//messages", Anthropic, Messages},
		{Auto, "/v1/messages/.", Anthropic, Messages},
		{Auto, "/../v1/messages", Anthropic, Messages},
		{Auto, "v1/messages", Anthropic, Messages},
		{Auto, "/anthropic/v1/messages", Anthropic, Messages},
		{Auto, "/v1/chat/./completions", OpenAI, ChatCompletions},
		{Auto, "/v1/responses/x/..", OpenAI, Responses},
		{Auto, "/v1/embeddings//", OpenAI, Embeddings},
		{Auto, "/v1/messages/count_tokens", Passthrough, EndpointOther},
		{Auto, "/v1/messages/../models", Passthrough, EndpointOther},
		{Auto, "/v1/messagesx", Passthrough, EndpointOther},
		{Auto, "", Passthrough, EndpointOther},
		{ForceOpenAI, "/openai/deployments/x/../chat/completions", OpenAI, ChatCompletions},
		{ForceOpenAI, "/v1/./responses", OpenAI, Responses},
		{ForceAnthropic, "/custom/path", Anthropic, Messages},
	} {
		if d, e := c.provider.Detect(c.path); d != c.d || e != c.e {
			t.Errorf("%v.Detect(%q) = %v %v, want %v %v", c.provider, c.path, d, e, c.d, c.e)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Auto.Detect("/v1/chat/completions") }); n != 0 {
		t.Errorf("Detect allocates %v times on a clean path", n)
	}
}
