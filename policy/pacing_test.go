package policy

import (
	"fmt"
	"testing"
	"time"
)

// sharedHolds records what a PaceHolds shares.
type sharedHolds []HoldStatus

func (s *sharedHolds) ShareHold(k HoldKey, until int64) {
	*s = append(*s, HoldStatus{HoldKey: k, Until: until})
}

// TestPaceHolds: a hold holds its model and credential only, until it
// ends; one recorded here is shared, one applied from the fleet is not;
// the table is bounded, and a full table makes room from expired holds.
func TestPaceHolds(t *testing.T) {
	var shared sharedHolds
	h := NewPaceHolds(&shared)
	now := time.Now().UnixNano()
	k := HoldKey{Model: "gpt-4o", Credential: "c1"}
	if h.Any(now) {
		t.Fatal("an empty table holds")
	}
	h.Hold(k, now+100, now)
	h.Apply(HoldKey{Model: "gpt-4o", Credential: "c2"}, now+200, now)
	if !h.Any(now) || h.Until(k, now) != now+100 || h.Until(HoldKey{Model: "gpt-4o-mini", Credential: "c1"}, now) != 0 {
		t.Errorf("holds: any %v, until %d", h.Any(now), h.Until(k, now))
	}
	if len(shared) != 1 || shared[0].HoldKey != k {
		t.Errorf("shared %+v, want only the hold recorded here", shared)
	}
	if h.Until(k, now+100) != 0 || h.Any(now+200) {
		t.Error("a hold outlived its end")
	}
	if got := h.Snapshot(time.Unix(0, now+150)); len(got) != 1 || got[0].Credential != "c2" {
		t.Errorf("snapshot %+v", got)
	}
	h.Hold(HoldKey{Model: string(make([]byte, maxHeldModel+1))}, now+100, now)
	if len(shared) != 1 {
		t.Error("a hold for an overlong model was kept")
	}

	full := NewPaceHolds(nil)
	for i := range maxHolds + 10 {
		full.Hold(HoldKey{Model: fmt.Sprint("m", i)}, now+10, now)
	}
	if len(full.m) != maxHolds {
		t.Errorf("%d holds, bound %d", len(full.m), maxHolds)
	}
	full.Hold(HoldKey{Model: "late"}, now+100, now+20)
	if full.Until(HoldKey{Model: "late"}, now+20) == 0 {
		t.Error("a full table of expired holds made no room")
	}
}
