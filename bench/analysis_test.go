package bench

import (
	"fmt"
	"strings"
	"testing"
)

// logOf builds a workload file: one "<seq> <ns>" line per pair.
func logOf(pairs ...int64) []byte {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(&b, "%d %d\n", pairs[i], pairs[i+1])
	}
	return []byte(b.String())
}

// steady is seq from..to-1, one line every 1 ms starting at t0 + from ms.
func steady(from, to, t0 int64) []int64 {
	var p []int64
	for s := from; s < to; s++ {
		p = append(p, s, t0+s*1_000_000)
	}
	return p
}

func TestParseLogAndKnownGap(t *testing.T) {
	// 0..9 every 1 ms, then a 25 ms pause, then 10..19.
	pairs := steady(0, 10, 0)
	for s := int64(10); s < 20; s++ {
		pairs = append(pairs, s, 34_000_000+(s-10)*1_000_000)
	}
	l := ParseLog(logOf(pairs...))
	if len(l.Lines) != 20 || l.Torn != 0 {
		t.Fatalf("lines %d torn %d, want 20, 0", len(l.Lines), l.Torn)
	}
	g := l.MaxGap()
	if g.NS != 25_000_000 || g.From.Seq != 9 || g.To.Seq != 10 {
		t.Errorf("MaxGap = %+v, want 25 ms between seq 9 and 10", g)
	}
	// The freeze instant lies inside the pause.
	if g, ok := l.GapSpanning(12_000_000); !ok || g.NS != 25_000_000 || g.From.Seq != 9 {
		t.Errorf("GapSpanning(12 ms) = %+v, %v; want the 25 ms gap", g, ok)
	}
	// An instant in steady writing gives a 1 ms gap.
	if g, ok := l.GapSpanning(3_500_000); !ok || g.NS != 1_000_000 || g.From.Seq != 3 {
		t.Errorf("GapSpanning(3.5 ms) = %+v, %v; want 1 ms after seq 3", g, ok)
	}
	// Before the first line or after the last one there is no spanning gap.
	if _, ok := l.GapSpanning(-1); ok {
		t.Error("GapSpanning before the first line: ok")
	}
	if _, ok := l.GapSpanning(1e12); ok {
		t.Error("GapSpanning after the last line: ok")
	}
	// A window covering the pause finds it; one after it only steady gaps.
	if g, ok := l.MaxGapOverlapping(5_000_000, 20_000_000); !ok || g.NS != 25_000_000 {
		t.Errorf("MaxGapOverlapping(window over the pause) = %+v, %v", g, ok)
	}
	if g, ok := l.MaxGapOverlapping(36_000_000, 40_000_000); !ok || g.NS != 1_000_000 {
		t.Errorf("MaxGapOverlapping(after the pause) = %+v, %v", g, ok)
	}
	if _, ok := l.MaxGapOverlapping(1e12, 2e12); ok {
		t.Error("MaxGapOverlapping past the end: ok")
	}
	if in := CheckIntegrity(l, Log{}, 20_000_000); !in.OK() || in.AfterOnNew != 10 || in.Lines != 20 {
		t.Errorf("clean log: %+v, OK %v", in, in.OK())
	}
}

func TestIntegrityLostLine(t *testing.T) {
	pairs := steady(0, 10, 0)
	pairs = append(pairs[:10], pairs[12:]...) // drop seq 5
	in := CheckIntegrity(ParseLog(logOf(pairs...)), Log{}, 2_000_000)
	if in.Lost != 1 || in.Doubled != 0 || in.OutOfOrder != 0 || in.Torn != 0 || in.OK() {
		t.Errorf("lost line: %+v, OK %v; want Lost 1 only", in, in.OK())
	}
}

func TestIntegrityDoubledLine(t *testing.T) {
	// A swap that replays the lines 3 and 4 (a copy taken after they were written, then
	// the process writing them again): 0 1 2 3 4 3 4 5 ...
	pairs := steady(0, 5, 0)
	pairs = append(pairs, 3, 3_000_000, 4, 4_000_000)
	pairs = append(pairs, steady(5, 10, 0)...)
	in := CheckIntegrity(ParseLog(logOf(pairs...)), Log{}, 2_000_000)
	if in.Doubled != 2 || in.Lost != 0 || in.OutOfOrder != 0 || in.OK() {
		t.Errorf("doubled lines: %+v, OK %v; want Doubled 2 only", in, in.OK())
	}
}

func TestIntegrityOutOfOrder(t *testing.T) {
	// 0 1 2 4 3 5: every line once, but 3 after 4.
	l := ParseLog(logOf(0, 0, 1, 1, 2, 2, 4, 4, 3, 3, 5, 5))
	in := CheckIntegrity(l, Log{}, 0)
	if in.OutOfOrder != 1 || in.Lost != 0 || in.Doubled != 0 || in.OK() {
		t.Errorf("out of order: %+v, OK %v; want OutOfOrder 1 only", in, in.OK())
	}
}

func TestIntegrityTornLine(t *testing.T) {
	for name, data := range map[string]string{
		"no final newline":  "0 100\n1 200\n2 30",
		"cut in the middle": "0 100\n1 2\x00\x00\n2 300\n",
		"garbage":           "0 100\nxyz\n1 200\n",
		"empty line":        "0 100\n\n1 200\n",
	} {
		l := ParseLog([]byte(data))
		if l.Torn != 1 {
			t.Errorf("%s: torn %d, want 1", name, l.Torn)
		}
		if in := CheckIntegrity(l, Log{}, 0); in.Torn != 1 || in.OK() {
			t.Errorf("%s: %+v, OK %v", name, in, in.OK())
		}
	}
}

// The shape seed 001 leaves: the new storage has the copy taken during the freeze, the
// old storage everything, since the process kept writing to its old file.
func TestIntegrityLinesLeftOnOldStorage(t *testing.T) {
	newLog := ParseLog(logOf(steady(0, 10, 0)...))
	oldLog := ParseLog(logOf(steady(0, 20, 0)...))
	resume := int64(12_500_000) // lines 13..19 were written after the resume
	in := CheckIntegrity(newLog, oldLog, resume)
	if in.MissingOnNew != 10 || in.AfterOnOld != 7 || in.AfterOnNew != 0 || in.Lost != 0 || in.OK() {
		t.Errorf("seed 001 shape: %+v, OK %v", in, in.OK())
	}
	// The process's own view, wherever its lines landed, has no hole.
	m := Merge(newLog, oldLog)
	if len(m.Lines) != 20 || m.MaxGap().NS != 1_000_000 {
		t.Errorf("merged: %d lines, max gap %d", len(m.Lines), m.MaxGap().NS)
	}
	// A good migration: old file stops at the freeze, new file has it all.
	good := CheckIntegrity(oldLog, ParseLog(logOf(steady(0, 10, 0)...)), 9_500_000)
	if !good.OK() || good.AfterOnNew != 10 || good.AfterOnOld != 0 {
		t.Errorf("good migration: %+v, OK %v", good, good.OK())
	}
}

func TestStatsOf(t *testing.T) {
	if s := StatsOf([]int64{5, 1, 3}); s != (Stats{Median: 3, Min: 1, Max: 5, N: 3}) {
		t.Errorf("odd: %+v", s)
	}
	if s := StatsOf([]int64{4, 1, 3, 10}); s != (Stats{Median: 3, Min: 1, Max: 10, N: 4}) {
		t.Errorf("even: %+v", s)
	}
	if s := StatsOf(nil); s != (Stats{}) {
		t.Errorf("empty: %+v", s)
	}
}
