// Package ssetest is a reference for testing stream parsers: the WHATWG
// event-stream rules (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
// and RFC 8259 written out as plainly as possible, on a whole stream at
// once, with encoding/json reading the data. It favours being obviously
// right over being fast.
package ssetest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// HeadLen is how much of the start of an event's data a parser keeps.
const HeadLen = 8

// Event is what a parser reports of one dispatched event.
type Event struct {
	Named  bool
	Name   string // empty when longer than jsonread.MaxText
	JSON   bool
	Fields []jsonread.Value
	Head   string
	// DataName is the event's name when its first data line came: a
	// parser that passes over the data of events so named must know.
	DataName []byte
}

// Block is a piece of a stream: everything from the end of one blank line
// through the end of the next, with the event that blank line dispatched
// (nil when none), or the stream's unfinished tail (Tail set).
type Block struct {
	Bytes []byte
	Event *Event
	Tail  bool
}

// Blocks splits a whole stream into blocks and reads the event of each,
// at paths in its data.
func Blocks(stream []byte, paths []string) []Block {
	var blocks []Block
	start, pos := 0, 0
	if bytes.HasPrefix(stream, []byte("\xEF\xBB\xBF")) {
		pos = 3 // one leading byte order mark is not part of the first line
	}
	var name, data, dataName []byte
	hasData := false
	for {
		i := bytes.IndexAny(stream[pos:], "\r\n")
		if i < 0 {
			break // an unfinished line is discarded, with its event
		}
		line := stream[pos : pos+i]
		end := pos + i + 1
		if stream[pos+i] == '\r' && end < len(stream) && stream[end] == '\n' {
			end++
		}
		pos = end
		switch {
		case len(line) == 0:
			b := Block{Bytes: stream[start:end]}
			if hasData {
				ev := event(name, bytes.TrimSuffix(data, []byte("\n")), paths)
				ev.DataName = dataName
				b.Event = &ev
			}
			blocks = append(blocks, b)
			start, name, data, dataName, hasData = end, nil, nil, nil, false
			continue
		case line[0] == ':':
			continue // a comment
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			name = value
		case "data":
			if !hasData {
				dataName = name
			}
			data = append(append(data, value...), '\n')
			hasData = true
		}
	}
	if start < len(stream) {
		blocks = append(blocks, Block{Bytes: stream[start:], Tail: true})
	}
	return blocks
}

// Events returns the events of a whole stream, in order.
func Events(stream []byte, paths []string) []Event {
	var events []Event
	for _, b := range Blocks(stream, paths) {
		if b.Event != nil {
			events = append(events, *b.Event)
		}
	}
	return events
}

// event reads one event's data.
func event(name, data []byte, paths []string) Event {
	ev := Event{Named: len(name) > 0, JSON: json.Valid(data), Head: string(data[:min(len(data), HeadLen)])}
	if ev.Named && len(name) <= jsonread.MaxText {
		ev.Name = string(name)
	}
	ev.Fields = make([]jsonread.Value, len(paths))
	if !ev.JSON {
		return ev
	}
	for i, p := range paths {
		ev.Fields[i] = value(bytes.Trim(data, " \t\r\n"), strings.Split(p, "."))
	}
	return ev
}

// value finds the value at a path: a step of digits indexes an array, any
// other names a member (the last one, when it is given twice).
func value(raw json.RawMessage, steps []string) jsonread.Value {
	for _, step := range steps {
		if index, err := strconv.Atoi(step); err == nil && strings.Trim(step, "0123456789") == "" {
			var elems []json.RawMessage
			if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil || index >= len(elems) {
				return jsonread.Value{}
			}
			raw = elems[index]
			continue
		}
		var members map[string]json.RawMessage
		if raw[0] != '{' || json.Unmarshal(raw, &members) != nil {
			return jsonread.Value{}
		}
		v, ok := members[step]
		if !ok {
			return jsonread.Value{}
		}
		raw = v
	}
	var v jsonread.Value
	switch raw[0] {
	case 'n':
		v.Kind = jsonread.Null
	case 't':
		v.Kind = jsonread.True
	case 'f':
		v.Kind = jsonread.False
	case '{':
		v.Kind = jsonread.Object
	case '[':
		v.Kind = jsonread.Array
		var elems []json.RawMessage
		_ = json.Unmarshal(raw, &elems)
		v.Len = len(elems)
	case '"':
		v.Kind = jsonread.String
		if len(raw)-2 <= jsonread.MaxText {
			var s string
			_ = json.Unmarshal(raw, &s)
			v.Text = []byte(s)
		}
	default:
		v.Kind = jsonread.Number
		if len(raw) <= jsonread.MaxText {
			v.Text = raw
		}
	}
	return v
}

// Same reports whether two events are alike, field by field.
func Same(a, b Event) bool {
	if a.Named != b.Named || a.Name != b.Name || a.JSON != b.JSON || a.Head != b.Head || len(a.Fields) != len(b.Fields) {
		return false
	}
	for i := range a.Fields {
		x, y := a.Fields[i], b.Fields[i]
		if x.Kind != y.Kind || x.Len != y.Len || !bytes.Equal(x.Text, y.Text) {
			return false
		}
	}
	return true
}

// FromStream copies what a parser reports into an Event.
func FromStream(ev *wire.StreamEvent) Event {
	e := Event{Named: ev.Named, Name: string(ev.Name), JSON: ev.JSON, Head: string(ev.Head)}
	for _, f := range ev.Fields {
		f.Text = bytes.Clone(f.Text)
		e.Fields = append(e.Fields, f)
	}
	return e
}

// ToStream turns an Event back into what a policy observes.
func ToStream(e Event) *wire.StreamEvent {
	ev := &wire.StreamEvent{Named: e.Named, JSON: e.JSON, Fields: e.Fields, Head: []byte(e.Head)}
	if e.Name != "" {
		ev.Name = []byte(e.Name)
	}
	return ev
}
