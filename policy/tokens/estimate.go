package tokens

import (
	"math"
	"strings"
)

// Token estimation.
//
// The gateway must know roughly how many tokens a request holds before any
// upstream call: the `tpm` limits reserve input + output cap at admission,
// and the context guard compares the same sum with the model's window. An
// exact count needs the provider's tokenizer, which for Claude is not public
// and for OpenAI costs about 1 ms per KB in Go (o200k with
// github.com/tiktoken-go/tokenizer, measured on a 2-core machine), so the
// gateway estimates from character classes instead, in one pass over the
// bytes.
//
// The model. BPE tokenizers first cut text into pre-tokens (a word with its
// leading space, a run of up to three digits, a run of punctuation, a run of
// newlines) and then merge bytes inside each pre-token. A count of bytes
// alone cannot see those cuts — English prose runs at about 5.3 characters
// per o200k token, Go code at 3.4 and JSON at 3.2 (measured with tiktoken-go) —
// but the transition between the classes of two neighbouring bytes can: a
// letter after a space opens a word, an upper-case letter after a lower-case
// one opens a new sub-word (camelCase), a quote after a letter opens a
// punctuation run, and so on. Each (previous class, current class) pair has
// a weight in tokens; the estimate is the sum of the weights. Non-ASCII text
// is weighed per rune by its UTF-8 lead byte, which tells CJK ideographs,
// kana, Hangul, accented Latin and emoji apart at no cost.
//
// The weights were fitted (non-negative least squares on relative error)
// against the o200k_base tokenizer on the samples in testdata/estimate and on
// unrelated text (licences, READMEs, the Go standard library, JSON test data,
// the vim tutor in six languages), then raised by estimateMargin so that no
// sample class undercounts by more than a few percent. estimate_test.go
// checks the result against the real tokenizer. Claude's tokenizer is not
// public; it is said to produce more tokens than o200k for the same text
// (about 3.5 characters per token for English, and Opus 4.7 and later up to
// 35 % more again, by third-party counts), so for Anthropic models the
// estimate is a floor rather than a ceiling: an undercount there costs at
// most one upstream call that the provider rejects, and the rate limiter
// settles to the real usage afterwards.

// estimateMargin scales every fitted weight. The fit alone is unbiased: half
// of all texts would undercount. With 7 % the worst paragraph of every
// sample class lands within 6 % below the real count and the medians 3–9 %
// above it, so the context guard does not turn away requests that fit.
const estimateMargin = 1.07

// units are 1/256 of a token: the fixed-point unit of the weight table.
// Sums stay in units until a message is complete, so rounding happens once
// per message, not once per byte.
type units = uint64

const unitsPerToken = 256

// charClass is what the estimator knows about one byte.
type charClass uint8

const (
	clsLower     charClass = iota // a-z
	clsUpper                      // A-Z
	clsDigit                      // 0-9
	clsSpace                      // ' '
	clsNewline                    // \n \r
	clsTab                        // \t and other control bytes
	clsPunct                      // other printable ASCII
	clsQuote                      // "
	clsBackslash                  // \ : punctuation, or a JSON escape
	clsCont                       // UTF-8 continuation byte (no weight)
	clsLatin                      // leads 0xC0–0xCB: U+0000–U+02FF, accented Latin
	clsGreek                      // leads 0xCC–0xCF: U+0300–U+03FF, combining marks, Greek
	clsAlphabet                   // leads 0xD0–0xDF: U+0400–U+07FF, Cyrillic, Armenian, Hebrew, Arabic
	clsSymbol                     // lead 0xE2: U+2000–U+2FFF, typographic quotes, dashes, arrows
	clsKana                       // lead 0xE3: U+3000–U+3FFF, CJK punctuation, hiragana, katakana
	clsHan                        // leads 0xE4–0xE9: U+4000–U+9FFF, CJK ideographs
	clsHangul                     // leads 0xEA–0xED: U+A000–U+DFFF, mostly Hangul syllables
	clsFullwidth                  // lead 0xEF: U+F000–U+FFFF, fullwidth forms (，！？：)
	clsOther3                     // leads 0xE0, 0xE1, 0xEE: Indic, Thai, Vietnamese, private use
	clsAstral                     // lead of a 4-byte rune: emoji, rare ideographs
	numClasses
)

// byteClass maps each byte to its class; pairWeight holds the weight of each
// (previous, current) class pair in units, indexed prev<<5|cur. Both are
// built once at start-up from transitionWeight.
var (
	byteClass  [256]charClass
	pairWeight [1 << 10]uint16
)

func init() {
	for b := 0; b < 256; b++ {
		byteClass[b] = classOf(byte(b))
	}
	for p := charClass(0); p < numClasses; p++ {
		for c := charClass(0); c < numClasses; c++ {
			w := transitionWeight(p, c) * estimateMargin * unitsPerToken
			pairWeight[int(p)<<5|int(c)] = uint16(math.Round(w))
		}
	}
}

func classOf(b byte) charClass {
	switch {
	case b >= 'a' && b <= 'z':
		return clsLower
	case b >= 'A' && b <= 'Z':
		return clsUpper
	case b >= '0' && b <= '9':
		return clsDigit
	case b == ' ':
		return clsSpace
	case b == '\n' || b == '\r':
		return clsNewline
	case b < 0x20 || b == 0x7f:
		return clsTab
	case b == '"':
		return clsQuote
	case b == '\\':
		return clsBackslash
	case b < 0x80:
		return clsPunct
	case b < 0xC0:
		return clsCont
	case b < 0xCC:
		return clsLatin
	case b < 0xD0:
		return clsGreek
	case b < 0xE0:
		return clsAlphabet
	case b == 0xE2:
		return clsSymbol
	case b == 0xE3:
		return clsKana
	case b >= 0xE4 && b <= 0xE9:
		return clsHan
	case b >= 0xEA && b <= 0xED:
		return clsHangul
	case b == 0xEF:
		return clsFullwidth
	case b < 0xF0:
		return clsOther3
	default:
		return clsAstral
	}
}

// transitionWeight is the fitted cost, in o200k tokens, of a byte of class
// cur following a byte of class prev (before estimateMargin). Where a
// weight is zero the tokenizer merges the byte into its neighbour: a single
// space joins the word after it, a tab before a word is absorbed the same
// way.
func transitionWeight(prev, cur charClass) float64 {
	if prev == clsBackslash {
		prev = clsPunct
	}
	if cur == clsBackslash {
		cur = clsPunct
	}
	letter := func(c charClass) bool { return c == clsLower || c == clsUpper }
	punct := func(c charClass) bool { return c == clsPunct || c == clsQuote }
	switch {
	case cur == clsCont:
		return 0
	case cur >= clsLatin: // one non-ASCII rune, weighed by script
		return runeWeight[cur-clsLatin]
	case letter(cur):
		switch {
		case prev == clsLower && cur == clsUpper:
			return 0.6 // camelCase: a new pre-token
		case prev == clsUpper && cur == clsUpper:
			return 0.276 // ACRONYMS tokenise in short pieces
		case letter(prev):
			return 0.108 // long words split into several tokens
		case prev == clsPunct:
			return 0.257 // ".get", "_id": punctuation joins the word
		case prev == clsQuote:
			return 0.3
		case prev == clsDigit:
			return 1.333 // hex and ids: "3f9a", "v2beta"
		case prev == clsCont:
			return 0.7 // ASCII after non-ASCII text
		default:
			return 0.72 // a word after a space, newline or tab
		}
	case cur == clsDigit:
		if prev == clsDigit {
			return 0.34 // digits go in runs of at most three
		}
		return 1
	case punct(cur):
		switch {
		case prev == clsQuote && cur == clsQuote:
			return 1
		case prev == clsQuote:
			return 0.518
		case prev == clsPunct && cur == clsQuote:
			return 0
		case prev == clsPunct:
			return 0.197 // "});" and "\":\"" are common merges
		case prev == clsSpace:
			return 1.015
		default:
			return 0.834
		}
	case cur == clsSpace:
		switch prev {
		case clsSpace:
			return 0.167 // runs of spaces (indentation) merge
		case clsNewline:
			return 0.238
		default:
			return 0 // joins the next word
		}
	case cur == clsNewline:
		if prev == clsNewline {
			return 0.574
		}
		return 0.6
	default: // tab and control bytes
		if prev == clsTab {
			return 0.462
		}
		return 0
	}
}

// runeWeight is the fitted cost of one non-ASCII rune by the class of its
// lead byte, from clsLatin to clsAstral. o200k gives Chinese and Japanese
// about 0.7–0.85 tokens per character depending on how common the
// characters are (1.49 characters per token on one measured Chinese
// sample, 1.2 on testdata/estimate), traditional Chinese a little more; Greek
// splits into more tokens than Cyrillic. Classes with little or no fitting
// data (clsSymbol, clsOther3, clsAstral) use round, deliberately high
// guesses.
var runeWeight = [numClasses - clsLatin]float64{
	clsLatin - clsLatin:     0.315,
	clsGreek - clsLatin:     0.45,
	clsAlphabet - clsLatin:  0.315,
	clsSymbol - clsLatin:    0.8,
	clsKana - clsLatin:      0.802,
	clsHan - clsLatin:       0.8,
	clsHangul - clsLatin:    0.726,
	clsFullwidth - clsLatin: 1.186,
	clsOther3 - clsLatin:    1,
	clsAstral - clsLatin:    1.5,
}

// EstimateTextTokens estimates how many tokens the text s holds for a
// modern BPE tokenizer (calibrated on OpenAI's o200k_base, see the top of
// this file). It reads each byte once through two small tables and decodes
// no UTF-8, so it runs at memory speed on ASCII.
func EstimateTextTokens(s []byte) int64 {
	return ceilTokens(countText(view(s), false))
}

// countText returns the estimate for s in units. With jsonEscapes, s is the
// inside of a JSON string and each escape sequence counts as the character
// it stands for: `\n` as a newline, `\u4e2d` as one ideograph. That matters
// because Python clients escape every non-ASCII character (json.dumps
// ensure_ascii), which would otherwise make CJK text look six times longer.
func countText(s string, jsonEscapes bool) units {
	var acc, a units
	prev := clsNewline
	for jsonEscapes {
		j := strings.IndexByte(s, '\\')
		if j < 0 {
			break
		}
		a, prev = countRun(s[:j], prev)
		acc += a
		c, n := escapeClass(s[j:])
		acc += units(pairWeight[int(prev)<<5|int(c)])
		// A multi-byte rune written out in UTF-8 ends with a continuation
		// byte; the escaped one must leave the same state.
		prev = c
		if c >= clsLatin {
			prev = clsCont
		}
		s = s[j+n:]
	}
	a, _ = countRun(s, prev)
	return acc + a
}

// countRun is the inner loop: the sum of pair weights over s, whose first
// byte follows a byte of class prev. It returns the class of the last byte.
// Keeping it free of branches and calls lets the compiler hold everything
// in registers; escapes are found between runs with IndexByte.
func countRun(s string, prev charClass) (units, charClass) {
	var acc units
	p := uint(prev)
	for i := 0; i < len(s); i++ {
		c := uint(byteClass[s[i]])
		acc += units(pairWeight[(p<<5|c)&(1<<10-1)])
		p = c
	}
	return acc, charClass(p)
}

// escapeClass classifies the JSON escape sequence at the start of s (which
// begins with a backslash) and returns its length in bytes.
func escapeClass(s string) (charClass, int) {
	if len(s) < 2 {
		return clsPunct, 1
	}
	switch s[1] {
	case 'n', 'r':
		return clsNewline, 2
	case 't', 'b', 'f':
		return clsTab, 2
	case '"':
		return clsQuote, 2
	case 'u':
		r, ok := hex4(s[2:])
		if !ok {
			return clsPunct, 2
		}
		switch {
		case r < 0x80:
			if c := byteClass[r]; c != clsBackslash {
				return c, 6
			}
			return clsPunct, 6
		case r < 0x800:
			return byteClass[0xC0|r>>6], 6
		case r >= 0xD800 && r < 0xDC00:
			// A surrogate pair encodes one astral rune; take both halves.
			if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
				if lo, ok := hex4(s[8:]); ok && lo >= 0xDC00 && lo < 0xE000 {
					return clsAstral, 12
				}
			}
			return clsAstral, 6
		case r >= 0xDC00 && r < 0xE000:
			return clsAstral, 6
		default:
			return byteClass[0xE0|r>>12], 6
		}
	default: // \\ \/ and anything malformed
		return clsPunct, 2
	}
}

// hex4 parses four hex digits at the start of s.
func hex4(s string) (uint16, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r uint16
	for i := 0; i < 4; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | uint16(c)
	}
	return r, true
}

// ceilTokens rounds units up to whole tokens.
func ceilTokens(u units) int64 {
	return int64((u + unitsPerToken - 1) / unitsPerToken)
}
