package wire

import "testing"

// TestDetectCleansThePath checks that every spelling of an API path that a
// router cleans to it is detected as that API, and that the paths of other
// operations stay pass-through however they are spelled.
func TestDetectCleansThePath(t *testing.T) {
	for _, c := range []struct {
		provider Provider
		path     string
		api      API
	}{
		{Auto, "/v1/messages", Messages},
		{Auto, "/v1/messages/", Messages},
		{Auto, "/v1/x/../messages", Messages},
		{Auto, "/v1/./messages", Messages},
		{Auto, "//v1//messages", Messages},
		{Auto, "/v1/messages/.", Messages},
		{Auto, "/../v1/messages", Messages},
		{Auto, "v1/messages", Messages},
		{Auto, "/anthropic/v1/messages", Messages},
		{Auto, "/v1/chat/./completions", ChatCompletions},
		{Auto, "/v1/responses/x/..", Responses},
		{Auto, "/v1/embeddings//", Embeddings},
		{Auto, "/v1/messages/count_tokens", Passthrough},
		{Auto, "/v1/messages/../models", Passthrough},
		{Auto, "/v1/messagesx", Passthrough},
		{Auto, "", Passthrough},
		{ForceOpenAI, "/openai/deployments/x/../chat/completions", ChatCompletions},
		{ForceOpenAI, "/v1/./responses", Responses},
		{ForceAnthropic, "/custom/path", Messages},
		// A forced provider's other endpoints are not its generation API.
		{ForceAnthropic, "/v1/messages/count_tokens", Passthrough},
		{ForceAnthropic, "/v1/messages/batches", Passthrough},
		{ForceAnthropic, "/v1/models", Passthrough},
		{ForceOpenAI, "/v1/files", Passthrough},
		{ForceOpenAI, "/v1/images/generations", Passthrough},
		{ForceOpenAI, "/openai/v1/responses/resp_1/cancel", Passthrough},
		{ForceOpenAI, "/v1", Passthrough},
		{ForceOpenAI, "/v1/messages", Passthrough}, // the other family's endpoint
	} {
		if api := c.provider.Detect(c.path); api != c.api {
			t.Errorf("%v.Detect(%q) = %s %s, want %s %s", c.provider, c.path, api.Family(), api.Name(), c.api.Family(), c.api.Name())
		}
	}
	if n := testing.AllocsPerRun(100, func() { Auto.Detect("/v1/chat/completions") }); n != 0 {
		t.Errorf("Detect allocates %v times on a clean path", n)
	}
}
