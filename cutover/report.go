package cutover

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// Report is what a cutover did, with every instant on CLOCK_MONOTONIC so that it lines up
// with timestamps the processes themselves write.
type Report struct {
	Src       string           `json:"src"`
	Dst       string           `json:"dst"`
	Remount   bool             `json:"remount"`
	Freeze    string           `json:"freeze"`
	Result    string           `json:"result"` // done, rolled-back, done-with-leftovers
	Error     string           `json:"error,omitempty"`
	Clock     string           `json:"clock"`
	Phases    []Phase          `json:"phases"`
	Processes []ReportProcess  `json:"processes"`
	Leftovers []ReportLeftover `json:"leftovers"`
}

// Phase is one step of the sequence.
type Phase struct {
	Name       string `json:"name"`
	StartNs    int64  `json:"start_ns"`
	DurationNs int64  `json:"duration_ns"`
}

// ReportProcess is one process: its pause runs from its freeze to its resume.
type ReportProcess struct {
	PID        int              `json:"pid"`
	Comm       string           `json:"comm"`
	FrozenNs   int64            `json:"frozen_ns"`
	ResumedNs  int64            `json:"resumed_ns"`
	PauseNs    int64            `json:"pause_ns"`
	FDsMoved   int              `json:"fds_moved"`
	CwdMoved   bool             `json:"cwd_moved"`
	MapsMoved  int              `json:"maps_moved"`
	LocksTaken int              `json:"locks_taken,omitempty"`
	Leftovers  []ReportLeftover `json:"leftovers"`
}

// ReportLeftover is something that could not be moved, and why.
type ReportLeftover struct {
	PID    int    `json:"pid,omitempty"`
	What   string `json:"what"`
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Result values.
const (
	ResultDone          = "done"
	ResultRolledBack    = "rolled-back"
	ResultWithLeftovers = "done-with-leftovers"
)

// ErrLeftovers: --strict, and something could not be moved.
var ErrLeftovers = errors.New("leftovers under --strict")

func (c *cutover) finishReport(err error) {
	r := c.report
	frozen := map[int]FrozenProcess{}
	if c.freezer != nil {
		for _, f := range c.freezer.Frozen() {
			frozen[f.PID] = f
		}
	}
	if c.disc != nil {
		for _, p := range c.disc.Processes {
			rp := ReportProcess{PID: p.PID, Comm: p.Comm, Leftovers: []ReportLeftover{}}
			if f, ok := frozen[p.PID]; ok {
				rp.FrozenNs = c.clock.ns(f.SignaledAt)
				if !f.ResumedAt.IsZero() {
					rp.ResumedNs = c.clock.ns(f.ResumedAt)
					rp.PauseNs = f.ResumedAt.Sub(f.SignaledAt).Nanoseconds()
				}
			}
			if m := c.movers[p.PID]; m != nil {
				rp.FDsMoved, rp.CwdMoved, rp.MapsMoved, rp.LocksTaken = m.fdsMoved, m.cwdMoved, m.mapsMoved, m.locksTaken
				for _, l := range m.leftovers {
					rl := ReportLeftover{PID: p.PID, What: l.What, Path: l.Path, Reason: l.Reason}
					rp.Leftovers = append(rp.Leftovers, rl)
					r.Leftovers = append(r.Leftovers, rl)
				}
			}
			r.Processes = append(r.Processes, rp)
		}
	}
	if r.Processes == nil {
		r.Processes = []ReportProcess{}
	}
	if r.Leftovers == nil {
		r.Leftovers = []ReportLeftover{}
	}
	switch {
	case err != nil:
		r.Result, r.Error = ResultRolledBack, err.Error()
	case len(r.Leftovers) > 0:
		r.Result = ResultWithLeftovers
	default:
		r.Result = ResultDone
	}
}

// monoClock turns a time.Time taken in this process into CLOCK_MONOTONIC nanoseconds.
type monoClock struct {
	base   time.Time
	baseNs int64
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{base: time.Now(), baseNs: ts.Nano()}
}

func (m monoClock) ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return m.baseNs + t.Sub(m.base).Nanoseconds()
}
