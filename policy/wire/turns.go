package wire

import "github.com/ai-resilience/caddy-ai-resilience/policy/body"

// turnFields reads a turn's role and type, and its content.
func turnFields(raw []byte) (role, typ, content []byte) {
	body.Members(raw, func(key string, val []byte) bool {
		switch key {
		case "role":
			role, _ = body.Contents(val)
		case "type":
			typ, _ = body.Contents(val)
		case "content":
			content = val
		}
		return true
	})
	return role, typ, content
}
