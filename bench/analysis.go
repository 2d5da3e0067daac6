package bench

import (
	"bytes"
	"strconv"
)

// Line is one line the workload wrote: its sequence number in its file and the
// CLOCK_MONOTONIC instant (ns) at which it was written.
type Line struct {
	Seq int64
	NS  int64
}

// Log is one workload file, parsed.
type Log struct {
	Lines []Line
	// Torn counts lines that are incomplete (no final newline) or do not parse as
	// "<seq> <ns>": the marks of a copy or a swap that cut a write in two.
	Torn int
}

// ParseLog parses a workload file. It never fails: what does not parse is counted as
// torn, so that a damaged file is reported, not rejected.
func ParseLog(data []byte) Log {
	var l Log
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			l.Torn++ // the last line has no newline
			break
		}
		line := data[:i]
		data = data[i+1:]
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 {
			l.Torn++
			continue
		}
		seq, err1 := strconv.ParseInt(string(line[:sp]), 10, 64)
		ns, err2 := strconv.ParseInt(string(line[sp+1:]), 10, 64)
		if err1 != nil || err2 != nil || seq < 0 || ns < 0 {
			l.Torn++
			continue
		}
		l.Lines = append(l.Lines, Line{Seq: seq, NS: ns})
	}
	return l
}

// Gap is the time between two consecutive lines of one file.
type Gap struct {
	From Line  `json:"from"`
	To   Line  `json:"to"`
	NS   int64 `json:"ns"`
}

// MaxGap is the largest gap between consecutive lines; zero with fewer than two lines.
func (l Log) MaxGap() Gap {
	var g Gap
	for i := 1; i < len(l.Lines); i++ {
		if d := l.Lines[i].NS - l.Lines[i-1].NS; d > g.NS {
			g = Gap{From: l.Lines[i-1], To: l.Lines[i], NS: d}
		}
	}
	return g
}

// GapSpanning is the gap between the last line written at or before instant and the
// first line written after it: for a freeze instant, the pause the file saw. ok is false
// when no line precedes or follows the instant.
func (l Log) GapSpanning(instant int64) (g Gap, ok bool) {
	for i := 1; i < len(l.Lines); i++ {
		if l.Lines[i-1].NS <= instant && l.Lines[i].NS > instant {
			return Gap{From: l.Lines[i-1], To: l.Lines[i], NS: l.Lines[i].NS - l.Lines[i-1].NS}, true
		}
	}
	return Gap{}, false
}

// MaxGapOverlapping is the largest gap whose interval overlaps [from, to]: the pause of a
// file when the exact freeze instant is unknown but the window of the migration is (a
// recipe run by gdb stops the process at some point between its start and its end).
func (l Log) MaxGapOverlapping(from, to int64) (g Gap, ok bool) {
	for i := 1; i < len(l.Lines); i++ {
		a, b := l.Lines[i-1].NS, l.Lines[i].NS
		if b < from || a > to {
			continue
		}
		if d := b - a; !ok || d > g.NS {
			g, ok = Gap{From: l.Lines[i-1], To: l.Lines[i], NS: d}, true
		}
	}
	return g, ok
}

// Integrity is what the lines of one file show after a migration.
type Integrity struct {
	Lines      int   `json:"lines"`        // complete lines on the new storage
	Lost       int64 `json:"lost"`         // sequence numbers 0..max missing on the new storage
	Doubled    int   `json:"doubled"`      // lines whose sequence number was already seen
	OutOfOrder int   `json:"out_of_order"` // first-seen lines with a seq below one already seen
	Torn       int   `json:"torn"`         // incomplete or unparsable lines on the new storage
	// MissingOnNew counts lines the old storage holds that the new one does not: lines the
	// process wrote to its old file after the copy (seed 001 leaves the files open there).
	MissingOnNew int `json:"missing_on_new"`
	// AfterOnNew and AfterOnOld count lines written after the cutover ended (its resume
	// instant) that landed on the new and on the old storage.
	AfterOnNew int `json:"after_on_new"`
	AfterOnOld int `json:"after_on_old"`
}

// OK is true when every line is on the new storage exactly once, in order, complete, and
// the writes after the cutover went to the new storage and none to the old.
func (in Integrity) OK() bool {
	return in.Lines > 0 && in.Lost == 0 && in.Doubled == 0 && in.OutOfOrder == 0 && in.Torn == 0 &&
		in.MissingOnNew == 0 && in.AfterOnNew > 0 && in.AfterOnOld == 0
}

// Add sums the counts of another file into in.
func (in *Integrity) Add(o Integrity) {
	in.Lines += o.Lines
	in.Lost += o.Lost
	in.Doubled += o.Doubled
	in.OutOfOrder += o.OutOfOrder
	in.Torn += o.Torn
	in.MissingOnNew += o.MissingOnNew
	in.AfterOnNew += o.AfterOnNew
	in.AfterOnOld += o.AfterOnOld
}

// CheckIntegrity compares a file as found on the new storage with the same file on the
// old storage (nil if it has none) for a cutover that resumed the writer at resumeNS.
func CheckIntegrity(newLog, oldLog Log, resumeNS int64) Integrity {
	in := Integrity{Lines: len(newLog.Lines), Torn: newLog.Torn}
	seen := make(map[int64]bool, len(newLog.Lines))
	var maxSeq int64 = -1
	for _, ln := range newLog.Lines {
		switch {
		case seen[ln.Seq]:
			in.Doubled++
		case ln.Seq < maxSeq:
			in.OutOfOrder++
		}
		seen[ln.Seq] = true
		if ln.Seq > maxSeq {
			maxSeq = ln.Seq
		}
		if ln.NS > resumeNS {
			in.AfterOnNew++
		}
	}
	in.Lost = maxSeq + 1 - int64(len(seen))
	for _, ln := range oldLog.Lines {
		if ln.NS > resumeNS {
			in.AfterOnOld++
		}
		if !seen[ln.Seq] {
			in.MissingOnNew++
		}
	}
	return in
}
