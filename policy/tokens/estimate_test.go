package tokens

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tiktoken-go/tokenizer"
)

func TestEstimateTextTokensBasics(t *testing.T) {
	if got := EstimateTextTokens(nil); got != 0 {
		t.Errorf("empty text: got %d, want 0", got)
	}
	for _, tc := range []struct {
		text     string
		min, max int64
	}{
		{"hello", 1, 2},
		{"Hello, world!", 3, 5},
		{"The quick brown fox jumps over the lazy dog.", 9, 13},
		{"func main() { fmt.Println(\"hi\") }", 9, 16},
		{`{"role":"user","content":"hi"}`, 8, 14},
		{"中文测试", 3, 5},
		{"こんにちは", 3, 6},
		{"🙂🙂", 2, 4},
	} {
		if got := EstimateTextTokens([]byte(tc.text)); got < tc.min || got > tc.max {
			t.Errorf("EstimateTextTokens(%q) = %d, want %d..%d", tc.text, got, tc.min, tc.max)
		}
	}
}

// TestEscapesCountAsTheirCharacters checks that JSON escapes are read as the
// characters they stand for: Python clients send every non-ASCII character
// as \uXXXX, and code arrives full of \n and \".
func TestEscapesCountAsTheirCharacters(t *testing.T) {
	for _, tc := range []struct{ plain, escaped string }{
		{"line one\nline two\n\tindented", `line one\nline two\n\tindented`},
		{`say "hi" now`, `say \"hi\" now`},
		{`C:\path`, `C:\\path`},
		{"中文测试，好的。", `\u4e2d\u6587\u6d4b\u8bd5\uff0c\u597d\u7684\u3002`},
		{"café über", `caf\u00e9 \u00fcber`},
		{"😀 ok", `\ud83d\ude00 ok`},
		{"a/b", `a\/b`},
	} {
		plain, esc := countText(tc.plain, false), countText(tc.escaped, true)
		if plain != esc {
			t.Errorf("%q: plain %d units, escaped %q %d units", tc.plain, plain, tc.escaped, esc)
		}
	}
	// Malformed escapes must not panic or go past the end.
	for _, s := range []string{`\`, `\u`, `\u12`, `\uZZZZ`, `\ud83d`, `\ud83d\u`, `\x`} {
		_ = countText(s, true)
	}
}

// estimateSample is one paragraph of a testdata/estimate file.
type estimateSample struct {
	class string
	text  []byte
}

// estimateSamples splits every testdata/estimate/<class>.txt file into
// paragraphs of at least 400 bytes: about the size of one message, and small
// enough that a class's worst paragraph shows real spread.
func estimateSamples(t testing.TB) []estimateSample {
	files, err := filepath.Glob("testdata/estimate/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in testdata/estimate: %v", err)
	}
	var out []estimateSample
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		class := strings.TrimSuffix(filepath.Base(f), ".txt")
		var cur []byte
		for _, p := range bytes.Split(data, []byte("\n\n")) {
			if len(cur) > 0 {
				cur = append(cur, "\n\n"...)
			}
			cur = append(cur, p...)
			if len(cur) >= 400 {
				out = append(out, estimateSample{class, cur})
				cur = nil
			}
		}
		if len(cur) > 0 {
			out = append(out, estimateSample{class, cur})
		}
	}
	return out
}

// TestEstimateAccuracy compares the estimate with OpenAI's o200k_base BPE
// tokenizer on prose, code, JSON, Chinese and Japanese. An undercount lets
// requests past the rate limiter that the provider then answers with 429,
// so no class may undercount by more than 10 %; an overcount makes the
// context guard refuse requests that fit, so none may overcount by more
// than 60 %.
func TestEstimateAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the o200k vocabulary")
	}
	enc, err := tokenizer.Get(tokenizer.O200kBase)
	if err != nil {
		t.Fatal(err)
	}
	errs := map[string][]float64{}
	totals := map[string][2]int64{}
	for _, s := range estimateSamples(t) {
		real, err := enc.Count(string(s.text))
		if err != nil {
			t.Fatal(err)
		}
		est := EstimateTextTokens(s.text)
		errs[s.class] = append(errs[s.class], float64(est)/float64(real)-1)
		tot := totals[s.class]
		totals[s.class] = [2]int64{tot[0] + est, tot[1] + int64(real)}
	}
	classes := make([]string, 0, len(errs))
	for c := range errs {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		e := errs[c]
		sort.Float64s(e)
		low, high, med := e[0], e[len(e)-1], e[len(e)/2]
		t.Logf("%-9s %2d paragraphs: whole file %+5.1f%%, median %+5.1f%%, worst under %+5.1f%%, worst over %+5.1f%% (%d estimated / %d o200k tokens)",
			c, len(e), 100*(float64(totals[c][0])/float64(totals[c][1])-1), 100*med, 100*low, 100*high, totals[c][0], totals[c][1])
		if low < -0.10 {
			t.Errorf("%s: a paragraph is undercounted by %.1f%%, limit 10%%", c, -100*low)
		}
		if high > 0.60 {
			t.Errorf("%s: a paragraph is overcounted by %.1f%%, limit 60%%", c, 100*high)
		}
	}
	for _, want := range []string{"english", "gocode", "json", "chinese", "japanese"} {
		if _, ok := errs[want]; !ok {
			t.Errorf("no %s sample in testdata/estimate", want)
		}
	}
}

func BenchmarkEstimateTextTokens(b *testing.B) {
	var ascii []byte
	for _, f := range []string{"english.txt", "gocode.txt", "json.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata/estimate", f))
		if err != nil {
			b.Fatal(err)
		}
		ascii = append(ascii, data...)
	}
	for len(ascii) < 256<<10 {
		ascii = append(ascii, ascii...)
	}
	b.SetBytes(int64(len(ascii)))
	b.ReportAllocs()
	for b.Loop() {
		EstimateTextTokens(ascii)
	}
}
