package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/livemig/livemig/cutover"
)

// Config is one `livemig bench downtime` invocation.
type Config struct {
	Cases   []Shape  // the workloads, each run with every method
	FS      string   // tmpfs, ext4 or xfs
	Repeat  int      // runs of each method per case
	Methods []string // in order; a method that cannot run is reported as skipped
	Livemig string   // the livemig binary, for the livemig methods
	// Before is how long the workload runs before the migration starts, After how long
	// it keeps running after it ends; the control run lasts Before+After.
	Before, After time.Duration
	Progress      io.Writer // one line per run; nil for none
}

// Stats are the median, minimum and maximum over the repeats.
type Stats struct {
	Median int64 `json:"median"`
	Min    int64 `json:"min"`
	Max    int64 `json:"max"`
	N      int   `json:"n"`
}

// StatsOf summarises values (ns); zero for none.
func StatsOf(v []int64) Stats {
	if len(v) == 0 {
		return Stats{}
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// ProcResult is one process of one run.
type ProcResult struct {
	PID       int       `json:"pid"`
	PauseNS   int64     `json:"pause_ns"`             // the largest gap of its files within its window
	Reported  int64     `json:"reported_pause_ns"`    // the method's own figure (livemig's report), 0 if none
	Window    Window    `json:"window"`               // when it could have been stopped
	Gap       Gap       `json:"gap"`                  // the gap that gave PauseNS
	Integrity Integrity `json:"integrity"`            // summed over its files
	Files     int       `json:"files"`                // files analysed
	Missing   []string  `json:"missing,omitempty"`    // files found on neither storage
	NoGap     int       `json:"no_gap_files"`         // files with no line before or after the window
	Problems  []string  `json:"problems,omitempty"`   // per-file integrity failures, first few
	LinesSeen int       `json:"lines_seen,omitempty"` // distinct lines on either storage
}

// RunResult is one run of one method.
type RunResult struct {
	Method      string          `json:"method"`
	Repeat      int             `json:"repeat"`
	PauseNS     int64           `json:"pause_ns"`     // the largest pause of any process
	TotalNS     int64           `json:"total_ns"`     // the migration from start to end
	IntegrityOK bool            `json:"integrity_ok"` // every file of every process OK
	Integrity   Integrity       `json:"integrity"`    // summed over every file
	Processes   []ProcResult    `json:"processes"`    // the writers (the dirty writer is not measured)
	Notes       []string        `json:"notes,omitempty"`
	Error       string          `json:"error,omitempty"`
	Report      *cutover.Report `json:"cutover_report,omitempty"`
	Timeline    *Timeline       `json:"timeline,omitempty"`
}

// MethodResult is every run of one method in one case.
type MethodResult struct {
	Method      string      `json:"method"`
	Skipped     string      `json:"skipped,omitempty"` // why it did not run
	Runs        []RunResult `json:"runs,omitempty"`
	Pause       Stats       `json:"pause_ns"`     // over the runs without error
	Total       Stats       `json:"total_ns"`     // over the runs without error
	IntegrityOK int         `json:"integrity_ok"` // runs whose integrity held
	Errors      int         `json:"errors"`       // runs that failed
}

// CaseResult is one workload shape, every method, and the control.
type CaseResult struct {
	Shape      Shape           `json:"shape"`
	ControlGap Stats           `json:"control_gap_ns"` // largest gap of a run with no migration
	ControlNS  []int64         `json:"control_runs_ns"`
	Methods    []*MethodResult `json:"methods"`
}

// Downtime runs every case of cfg and returns the results. Storage and processes of
// each run are cleaned up before the next starts, also on error and when ctx ends.
func Downtime(ctx context.Context, cfg Config) ([]*CaseResult, error) {
	if cfg.Repeat < 1 {
		cfg.Repeat = 1
	}
	tmp, err := os.MkdirTemp("", "livemig-bench-work-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin, err := BuildWorkload(tmp)
	if err != nil {
		return nil, err
	}
	var out []*CaseResult
	for _, sh := range cfg.Cases {
		cr := &CaseResult{Shape: sh}
		byName := map[string]*MethodResult{}
		for _, m := range cfg.Methods {
			mr := &MethodResult{Method: m}
			if why := Missing(m); why != "" {
				mr.Skipped = why
			}
			byName[m] = mr
			cr.Methods = append(cr.Methods, mr)
		}
		for rep := 1; rep <= cfg.Repeat; rep++ {
			gap, err := controlRun(ctx, cfg, bin, sh)
			if err != nil {
				return out, fmt.Errorf("case %s, control run %d: %w", sh, rep, err)
			}
			cr.ControlNS = append(cr.ControlNS, gap)
			cfg.progress("%s control #%d: largest gap %s", sh, rep, ms(gap))
			for _, m := range cfg.Methods {
				mr := byName[m]
				if mr.Skipped != "" {
					continue
				}
				rr, err := migrateRun(ctx, cfg, bin, tmp, sh, m)
				if ctx.Err() != nil {
					return out, ctx.Err()
				}
				var un errUnavailable
				if errors.As(err, &un) {
					mr.Skipped = un.why
					cfg.progress("%s %s: skipped: %s", sh, m, un.why)
					continue
				}
				if err != nil {
					return out, fmt.Errorf("case %s, %s run %d: %w", sh, m, rep, err)
				}
				rr.Repeat = rep
				mr.Runs = append(mr.Runs, *rr)
				if rr.Error != "" {
					cfg.progress("%s %s #%d: error: %s", sh, m, rep, rr.Error)
				} else {
					cfg.progress("%s %s #%d: pause %s, total %s, integrity %s", sh, m, rep, ms(rr.PauseNS), ms(rr.TotalNS), okWord(rr.IntegrityOK))
				}
			}
		}
		cr.ControlGap = StatsOf(cr.ControlNS)
		for _, mr := range cr.Methods {
			var pauses, totals []int64
			for _, r := range mr.Runs {
				if r.Error != "" {
					mr.Errors++
					continue
				}
				pauses = append(pauses, r.PauseNS)
				totals = append(totals, r.TotalNS)
				if r.IntegrityOK {
					mr.IntegrityOK++
				}
			}
			mr.Pause, mr.Total = StatsOf(pauses), StatsOf(totals)
		}
		out = append(out, cr)
	}
	return out, nil
}

func (cfg Config) progress(format string, a ...any) {
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, format+"\n", a...)
	}
}

func okWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}

// sleepCtx sleeps d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// prepare creates the storage, fills the tree and starts the workload on it.
func prepare(ctx context.Context, cfg Config, bin string, sh Shape) (*Storage, *Workload, error) {
	st, err := NewStorage(cfg.FS, sh.Size)
	if err != nil {
		return nil, nil, err
	}
	if err := Fill(st.Src, sh.Size); err != nil {
		return st, nil, err
	}
	wl, err := StartWorkload(ctx, bin, st.Src, sh)
	if err != nil {
		return st, nil, err
	}
	return st, wl, nil
}

func teardown(st *Storage, wl *Workload, err *error) {
	if wl != nil {
		wl.Stop()
	}
	if st != nil {
		if cerr := st.Close(); cerr != nil && *err == nil {
			*err = fmt.Errorf("cleaning up the storage: %w", cerr)
		}
	}
}

// controlRun runs the workload with no migration and returns its largest gap.
func controlRun(ctx context.Context, cfg Config, bin string, sh Shape) (gap int64, err error) {
	st, wl, err := prepare(ctx, cfg, bin, sh)
	defer teardown(st, wl, &err)
	if err != nil {
		return 0, err
	}
	if err := sleepCtx(ctx, cfg.Before+cfg.After); err != nil {
		return 0, err
	}
	if err := wl.Exited(); err != nil {
		return 0, err
	}
	wl.Stop()
	for _, w := range wl.Writers {
		for _, f := range w.Files {
			data, err := os.ReadFile(filepath.Join(st.OldView, f))
			if err != nil {
				return 0, fmt.Errorf("control log: %w", err)
			}
			if g := ParseLog(data).MaxGap(); g.NS > gap {
				gap = g.NS
			}
		}
	}
	return gap, nil
}

// migrateRun runs one method on a fresh storage and workload, and analyses the lines.
// A failure of the method itself is reported in the RunResult; err is for failures of
// the harness (storage, workload) and for an unavailable method.
func migrateRun(ctx context.Context, cfg Config, bin, tmp string, sh Shape, method string) (rr *RunResult, err error) {
	st, wl, err := prepare(ctx, cfg, bin, sh)
	defer func() {
		// the workload must be gone before its storage can be unmounted
		teardown(st, wl, &err)
	}()
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, cfg.Before); err != nil {
		return nil, err
	}
	e := &env{st: st, wl: wl, tmp: tmp, livemig: cfg.Livemig}
	mig, merr := runMethod(ctx, method, e)
	var un errUnavailable
	if errors.As(merr, &un) {
		return nil, merr
	}
	rr = &RunResult{Method: method}
	if mig != nil {
		rr.Notes = mig.notes
		rr.Report = mig.report
	}
	if merr != nil {
		rr.Error = merr.Error()
		if mig == nil || mig.end == 0 {
			return rr, nil
		}
	}
	if err := sleepCtx(ctx, cfg.After); err != nil {
		return nil, err
	}
	if err := wl.Exited(); err != nil {
		rr.Error = err.Error()
		return rr, nil
	}
	wl.Stop() // every line is written before the files are read
	analyse(rr, mig, wl, st)
	return rr, nil
}

// analyse fills rr from the workload's files on the old and on the new storage.
func analyse(rr *RunResult, mig *migration, wl *Workload, st *Storage) {
	rr.TotalNS = mig.end - mig.start
	rr.IntegrityOK = true
	tl := newTimeline(mig.start, mig.end)
	for _, w := range wl.Writers {
		pr := ProcResult{PID: w.PID, Reported: mig.reported[w.PID]}
		win, ok := mig.windows[w.PID]
		if !ok {
			win = Window{mig.start, mig.end}
		}
		pr.Window = win
		for _, f := range w.Files {
			pr.Files++
			newData, errNew := os.ReadFile(filepath.Join(st.NewView, f))
			oldData, errOld := os.ReadFile(filepath.Join(st.OldView, f))
			if errNew != nil && errOld != nil {
				pr.Missing = append(pr.Missing, f)
				rr.IntegrityOK = false
				continue
			}
			newLog, oldLog := ParseLog(newData), ParseLog(oldData)
			in := CheckIntegrity(newLog, oldLog, win.To)
			if !in.OK() && len(pr.Problems) < 3 {
				pr.Problems = append(pr.Problems, fmt.Sprintf("%s: %+v", f, in))
			}
			rr.IntegrityOK = rr.IntegrityOK && in.OK()
			pr.Integrity.Add(in)
			all := Merge(newLog, oldLog)
			pr.LinesSeen += len(all.Lines)
			tl.add(all)
			g, ok := all.MaxGapOverlapping(win.From, win.To)
			if !ok {
				pr.NoGap++
				continue
			}
			if g.NS > pr.PauseNS {
				pr.PauseNS, pr.Gap = g.NS, g
			}
		}
		if pr.PauseNS > rr.PauseNS {
			rr.PauseNS = pr.PauseNS
		}
		if pr.Gap.NS > 0 {
			tl.Pauses = append(tl.Pauses, [2]int64{pr.Gap.From.NS - tl.StartNS, pr.Gap.To.NS - tl.StartNS})
		}
		rr.Integrity.Add(pr.Integrity)
		rr.Processes = append(rr.Processes, pr)
	}
	rr.Timeline = tl
}

// Merge is every distinct line of a file as found on either storage, by sequence
// number: what the process wrote, wherever it landed.
func Merge(logs ...Log) Log {
	bySeq := map[int64]Line{}
	var m Log
	for _, l := range logs {
		m.Torn += l.Torn
		for _, ln := range l.Lines {
			if _, ok := bySeq[ln.Seq]; !ok {
				bySeq[ln.Seq] = ln
				m.Lines = append(m.Lines, ln)
			}
		}
	}
	sort.Slice(m.Lines, func(i, j int) bool { return m.Lines[i].Seq < m.Lines[j].Seq })
	return m
}

func ms(ns int64) string { return fmt.Sprintf("%.1f ms", float64(ns)/1e6) }
