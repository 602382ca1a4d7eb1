package mockprovider

import "net/http"

// apiError describes one error response in both dialects; its body method
// writes it in either wire shape.
type apiError struct {
	// anthropicType is Anthropic's error.type.
	anthropicType string
	// openAIType and openAICode are OpenAI's error.type and error.code; an
	// empty code is written as null.
	openAIType string
	openAICode string
	// message is the human-readable error.message.
	message string
}

// errorFor returns the error a real provider gives for the status
// (https://docs.anthropic.com/en/api/errors,
// https://platform.openai.com/docs/guides/error-codes). quota selects OpenAI's
// insufficient_quota flavour of 429.
func errorFor(status int, quota bool) apiError {
	switch {
	case status == http.StatusTooManyRequests && quota:
		return apiError{"rate_limit_error", "insufficient_quota", "insufficient_quota",
			"You exceeded your current quota, please check your plan and billing details."}
	case status == http.StatusTooManyRequests:
		return apiError{"rate_limit_error", "requests", "rate_limit_exceeded",
			"Rate limit reached for requests (mock provider). Please try again later."}
	case status == http.StatusBadRequest:
		return apiError{"invalid_request_error", "invalid_request_error", "",
			"The request was rejected by the mock provider's script."}
	case status == http.StatusUnauthorized:
		return apiError{"authentication_error", "invalid_request_error", "invalid_api_key",
			"Incorrect API key provided."}
	case status == http.StatusPaymentRequired:
		return apiError{"billing_error", "invalid_request_error", "",
			"Your credit balance is too low to access the API."}
	case status == http.StatusForbidden:
		return apiError{"permission_error", "invalid_request_error", "",
			"Your API key does not have permission to use the specified resource."}
	case status == http.StatusNotFound:
		return apiError{"not_found_error", "invalid_request_error", "",
			"The requested resource was not found."}
	case status == http.StatusRequestTimeout || status == http.StatusGatewayTimeout:
		return apiError{"timeout_error", "server_error", "",
			"The request timed out."}
	case status == http.StatusConflict:
		return apiError{"conflict_error", "invalid_request_error", "",
			"The request conflicts with another request."}
	case status == http.StatusRequestEntityTooLarge:
		return apiError{"request_too_large", "invalid_request_error", "",
			"The request is too large."}
	case status == 529:
		return apiError{"overloaded_error", "server_error", "",
			"Overloaded"}
	case status >= 500:
		return apiError{"api_error", "server_error", "",
			"The server had an error while processing your request. Sorry about that!"}
	default:
		return apiError{"invalid_request_error", "invalid_request_error", "",
			http.StatusText(status)}
	}
}

// anthropicError is the Anthropic error body:
// {"type":"error","error":{"type":...,"message":...},"request_id":...}.
type anthropicError struct {
	Type      string             `json:"type"`
	Error     anthropicErrorInfo `json:"error"`
	RequestID string             `json:"request_id"`
}

// anthropicErrorInfo is the inner error object of anthropicError.
type anthropicErrorInfo struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// openAIError is the OpenAI error body:
// {"error":{"message":...,"type":...,"param":null,"code":...}}.
type openAIError struct {
	Error openAIErrorInfo `json:"error"`
}

// openAIErrorInfo is the inner error object of openAIError.
type openAIErrorInfo struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// body returns the error body in the given dialect.
func (e apiError) body(d dialect, requestID string) any {
	if d == anthropicDialect {
		return anthropicError{
			Type:      "error",
			Error:     anthropicErrorInfo{Type: e.anthropicType, Message: e.message},
			RequestID: requestID,
		}
	}
	info := openAIErrorInfo{Message: e.message, Type: e.openAIType}
	if e.openAICode != "" {
		info.Code = &e.openAICode
	}
	return openAIError{Error: info}
}
