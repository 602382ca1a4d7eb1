package integration

import (
	"bytes"
	"strconv"
)

func itoa(n int) string { return strconv.Itoa(n) }

func replaceOnce(b, old, new []byte) []byte { return bytes.Replace(b, old, new, 1) }
