// Package sse follows a server-sent event stream on its way to the client,
// in bounded memory. It frames events by the parsing rules of the WHATWG
// HTML standard (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
// lines end in LF, CR or CRLF, a line starting with a colon is a comment,
// `data:` lines join with LF, a blank line dispatches the event when it has
// data, and an event the stream ends in the middle of is discarded. It
// never keeps an event's data: it reads the event's name, the start of its
// data and the members a policy asks for as the bytes pass, so an event of
// any size (the official SDKs accept 32 MiB in one line) costs the same
// few kilobytes.
package sse

import (
	"bytes"
	"slices"

	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// Rules are what a Parser reads of each event: the JSON paths of its data,
// and whether an event of a given name has anything to read at all. A
// wire.API is the rules of its stream.
type Rules interface {
	StreamPaths() *jsonread.Paths
	ReadsData(name []byte) bool
}

// Handler receives what a Parser finds.
type Handler interface {
	// Boundary is called at each blank line: end is the offset just past
	// it in the bytes being fed, and ev the event it dispatched, or nil
	// when no data came since the last blank line. ev is valid only
	// during the call.
	Boundary(end int, ev *wire.StreamEvent)
}

// lineState is where the parser is within a line.
type lineState uint8

const (
	lineStart lineState = iota // at the start of a line
	lineName                   // in a field name
	lineSpace                  // just after the colon, where one space is dropped
	lineValue                  // in a field value
	lineSkip                   // in a comment, or a value nobody reads
)

// field is the field a line sets.
type field uint8

const (
	fieldOther field = iota
	fieldData
	fieldEvent
)

// headLen is how much of the start of each event's data is kept.
const headLen = 8

// lf joins data lines.
var lf = []byte{'\n'}

// bom is the UTF-8 byte order mark that may start a stream.
var bom = [3]byte{0xEF, 0xBB, 0xBF}

// Parser follows one event stream. Its zero value is not ready: call Reset.
type Parser struct {
	rules  Rules
	json   jsonread.Reader
	fields []jsonread.Value
	ev     wire.StreamEvent

	line     lineState
	name     [5]byte // the start of the line's field name
	nameLen  int
	field    field
	lastCR   bool // the last byte fed was a CR, which an LF may complete
	bomSeen  int  // bytes of a leading byte order mark matched so far
	bomDone  bool // the stream's first bytes have been judged
	lines    int  // data lines of the current event
	skip     bool // its data is passed over: its name needs none read
	unread   bool // ... and a later name needed it
	named    bool // the current event has a non-empty event field
	evName   []byte
	nameLong bool
	head     [headLen]byte
	headN    int
	read     bool // the reader has data of the current event
}

// Reset prepares p to follow a new stream by the rules r.
func (p *Parser) Reset(r Rules) {
	p.rules = r
	paths := r.StreamPaths()
	p.json.Reset(paths)
	p.fields = slices.Grow(p.fields[:0], paths.Len())[:paths.Len()]
	clear(p.fields)
	p.line, p.nameLen, p.lastCR, p.bomSeen, p.bomDone, p.read = lineStart, 0, false, 0, false, false
	p.endEvent()
}

// Feed parses the next bytes of the stream.
func (p *Parser) Feed(b []byte, h Handler) {
	i := 0
	if !p.bomDone {
		for p.bomSeen < len(bom) && i < len(b) && b[i] == bom[p.bomSeen] {
			p.bomSeen++
			i++
		}
		switch {
		case p.bomSeen == len(bom):
			p.bomDone = true // one leading mark is dropped
		case i < len(b):
			// Not a mark after all: what matched is the first line's.
			p.bomDone = true
			p.scan(bom[:p.bomSeen], 0, h)
		default:
			return
		}
	}
	p.scan(b, i, h)
}

// scan parses b from i on.
func (p *Parser) scan(b []byte, i int, h Handler) {
	if p.lastCR && i < len(b) {
		p.lastCR = false
		if b[i] == '\n' {
			i++ // the LF of a CRLF whose CR ended the last piece
		}
	}
	for i < len(b) {
		switch p.line {
		case lineStart:
			switch b[i] {
			case '\n', '\r':
				i = p.endLine(b, i)
				p.dispatch(h, i)
				continue
			case ':':
				p.line = lineSkip
				i++
				continue
			}
			p.line, p.nameLen = lineName, 0
		case lineName:
			j := i
			for j < len(b) && b[j] != ':' && b[j] != '\n' && b[j] != '\r' {
				j++
			}
			if p.nameLen < len(p.name) {
				copy(p.name[p.nameLen:], b[i:j])
			}
			p.nameLen = min(p.nameLen+j-i, len(p.name)+1) // longer names are all "other"
			i = j
			if i == len(b) {
				return
			}
			p.beginField()
			if b[i] == ':' {
				if p.field != fieldOther {
					p.line = lineSpace
				}
				i++
				continue
			}
			// A line without a colon is a field with an empty value.
			p.endField()
			i = p.endLine(b, i)
		case lineSpace:
			p.line = lineValue
			if b[i] == ' ' {
				i++
			}
		case lineValue, lineSkip:
			j := i + lineEnd(b[i:])
			if p.line == lineValue && j > i {
				p.value(b[i:j])
			}
			i = j
			if i == len(b) {
				return
			}
			if p.line == lineValue {
				p.endField()
			}
			i = p.endLine(b, i)
		}
	}
}

// lineEnd returns the index of the first CR or LF in b, or len(b). Streams
// end lines in LF, so the CR search is confined to the text before it.
func lineEnd(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	scope := b
	if n >= 0 {
		scope = b[:n]
	} else {
		n = len(b)
	}
	if r := bytes.IndexByte(scope, '\r'); r >= 0 {
		return r
	}
	return n
}

// endLine consumes the line end at b[i] (CR, LF or CRLF) and returns the
// index after it.
func (p *Parser) endLine(b []byte, i int) int {
	p.line = lineStart
	if b[i] == '\r' {
		if i+1 == len(b) {
			p.lastCR = true
		} else if b[i+1] == '\n' {
			return i + 2
		}
	}
	return i + 1
}

// beginField starts the value of the field whose name has been read.
func (p *Parser) beginField() {
	name := p.name[:min(p.nameLen, len(p.name))]
	switch {
	case p.nameLen == 4 && string(name) == "data":
		p.field = fieldData
		if p.lines == 0 && p.named && !p.rules.ReadsData(p.eventName()) {
			p.skip = true
		}
		if p.lines > 0 {
			p.data(lf) // data lines join with LF
		}
		p.lines++
	case p.nameLen == 5 && string(name) == "event":
		p.field = fieldEvent
		p.evName, p.nameLong = p.evName[:0], false
	default:
		p.field = fieldOther // id and retry concern reconnection only
		p.line = lineSkip
	}
}

// value takes a piece of the current line's value.
func (p *Parser) value(b []byte) {
	switch p.field {
	case fieldData:
		p.data(b)
	case fieldEvent:
		if len(p.evName)+len(b) > jsonread.MaxText {
			p.nameLong = true
			return
		}
		p.evName = append(p.evName, b...)
	}
}

// endField ends the current line's field.
func (p *Parser) endField() {
	if p.field == fieldEvent {
		if p.nameLong {
			p.evName = p.evName[:0]
		}
		p.named = len(p.evName) > 0 || p.nameLong
		if p.skip && p.named && p.rules.ReadsData(p.eventName()) {
			p.unread = true
		}
	}
}

// eventName returns the current event's name, nil when it is too long to
// keep.
func (p *Parser) eventName() []byte {
	if p.nameLong {
		return nil
	}
	return p.evName
}

// data takes a piece of the event's data.
func (p *Parser) data(b []byte) {
	p.headN += copy(p.head[p.headN:], b)
	if !p.skip {
		p.read = true
		p.json.Feed(b)
	}
}

// dispatch ends the event at a blank line that ends at offset end.
func (p *Parser) dispatch(h Handler, end int) {
	if p.lines == 0 {
		p.endEvent()
		h.Boundary(end, nil)
		return
	}
	ev := &p.ev
	ev.Named, ev.Name, ev.Unread = p.named, nil, p.unread
	if p.named && !p.nameLong {
		ev.Name = p.evName
	}
	ev.JSON = p.read && p.json.End()
	if ev.JSON {
		p.fields = p.json.Values(p.fields)
	} else {
		clear(p.fields)
	}
	ev.Fields = p.fields
	ev.Head = p.head[:p.headN]
	h.Boundary(end, ev)
	p.endEvent()
}

// endEvent clears the event buffers.
func (p *Parser) endEvent() {
	p.lines, p.named, p.nameLong, p.headN, p.skip, p.unread = 0, false, false, 0, false, false
	p.evName = p.evName[:0]
	if p.read {
		p.json.Reset(p.rules.StreamPaths())
		p.read = false
	}
}

// Pending describes where the stream stopped: midLine when it stopped
// inside a line, midEvent when an event had begun (a client parser holds
// its data or name), and lastCR when its last byte was a CR that an LF
// would complete rather than follow.
func (p *Parser) Pending() (midLine, midEvent, lastCR bool) {
	midLine = p.line != lineStart || (!p.bomDone && p.bomSeen > 0)
	return midLine, midLine || p.lines > 0 || p.named, p.lastCR
}
