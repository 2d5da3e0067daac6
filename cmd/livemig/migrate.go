package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
	livesync "github.com/livemig/livemig/sync"
)

func init() {
	register(&command{
		name:    "migrate",
		summary: "mirror SRC to DST, wait until the pause would fit --max-downtime, cut over, verify",
		usage: `migrate SRC DST [--max-downtime D] [--settle D] [--at HH:MM | --wait-for-signal] [--timeout D]
        [--throttle SHARE] [--max-attempts N] [--remount] [--freeze sigstop|ptrace] [--pid PID]...
        [--strict] [--status-file FILE] [--json]

Runs the first mirror pass, follows changes, and waits until the mirror's estimate of
the final delta is under --max-downtime and has stayed there for --settle. Then it cuts
over (as 'livemig cutover'), checks in /proc that nothing moved is left on the old
storage, and prints the report. If, once the processes are frozen, the final delta turns
out larger than --max-downtime allows, they are thawed at once, mirroring goes on, and
the cutover is tried again, at most --max-attempts times in all.

  livemig migrate --remount /srv/data /mnt/new           retire a disk under running jobs
  livemig migrate /srv/job/run /data/job/run             re-point a job to a new path
  livemig migrate --wait-for-signal --remount /srv/data /mnt/new &
  kill -USR1 %1                                           ... days later, in the window
  livemig migrate --at 02:30 --timeout 3h --max-downtime 50ms /srv/data /mnt/new
  livemig migrate --throttle 0.5 /srv/busy /mnt/new/busy  writes outrun the copy

Ctrl-C or SIGTERM before the freeze stops cleanly (DST stays a valid partial mirror,
nothing was frozen); during the cutover the rollback is finished first.
Progress goes to stderr (a live line on a terminal, log records otherwise); the report
(--json: a JSON document) to stdout. 'livemig status' shows a running migrate.
Exit status: 0 done; 1 not done, nothing changed (rolled back, did not converge, timed
out, interrupted); 2 bad usage or input; 3 done with leftovers (listed).`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			var mg migration
			fs.DurationVar(&mg.budget, "max-downtime", 100*time.Millisecond, "the longest pause the processes may see (the final delta's estimate must fit it)")
			fs.DurationVar(&mg.settle, "settle", 2*time.Second, "how long the estimate must stay under --max-downtime before the cutover")
			at := fs.String("at", "", "cut over no earlier than HH:MM (local time, the next such moment)")
			fs.BoolVar(&mg.waitSignal, "wait-for-signal", false, "mirror until SIGUSR1, then cut over once converged")
			fs.DurationVar(&mg.timeout, "timeout", 0, "give up (nothing frozen, exit 1) if not cut over this long after the start; 0: never")
			fs.IntVar(&mg.maxAttempts, "max-attempts", 3, "cutover attempts whose final delta may turn out over budget before giving up")
			fs.Float64Var(&mg.throttleLimit, "throttle", 0, "if writes outrun the copy, stop the writers for up to this share of their time (0..0.95) until converged")
			fs.BoolVar(&mg.cfg.Remount, "remount", false, "mount DST's filesystem on SRC's path (both must be mount points)")
			freeze := fs.String("freeze", "sigstop", "how processes are held: sigstop (as the recipes) or ptrace (invisible to the parent)")
			fs.IntSliceVar(&mg.cfg.PIDs, "pid", nil, "only these processes (repeatable)")
			fs.BoolVar(&mg.cfg.Strict, "strict", false, "treat leftovers as failure: roll back")
			fs.StringVar(&mg.statusPath, "status-file", "", "where to keep the status for 'livemig status' (default "+statusDir+"/migrate-DST.json)")
			fs.BoolVar(&mg.asJSON, "json", false, "print the report as JSON on stdout")
			return func(args []string) error {
				if len(args) != 2 {
					return usagef("migrate needs SRC and DST (got %d arguments)", len(args))
				}
				switch {
				case mg.budget <= 0:
					return usagef("--max-downtime must be positive")
				case mg.settle < 0 || mg.timeout < 0:
					return usagef("--settle and --timeout cannot be negative")
				case mg.maxAttempts < 1:
					return usagef("--max-attempts must be at least 1")
				case mg.throttleLimit < 0 || mg.throttleLimit > 0.95:
					return usagef("--throttle %v: want a share of time between 0 and 0.95", mg.throttleLimit)
				case *at != "" && mg.waitSignal:
					return usagef("--at and --wait-for-signal exclude each other")
				}
				if *at != "" {
					t, err := nextAt(*at, time.Now())
					if err != nil {
						return usagef("--at: %v", err)
					}
					mg.at = t
				}
				mg.cfg.Src, mg.cfg.Dst, mg.cfg.Freeze = args[0], args[1], cutover.FreezeMode(*freeze)
				return mg.main()
			}
		},
	})
}

// nextAt is the next moment (today or tomorrow) at the wall-clock time HH:MM.
func nextAt(hhmm string, now time.Time) (time.Time, error) {
	t, err := time.ParseInLocation("15:04", hhmm, now.Location())
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not HH:MM", hhmm)
	}
	next := time.Date(now.Year(), now.Month(), now.Day(), t.Hour(), t.Minute(), 0, 0, now.Location())
	if !next.After(now) {
		next = next.AddDate(0, 0, 1)
	}
	return next, nil
}

// Test-only knobs, read by the command and nowhere else. They exist so that the tests
// through the built binary can make situations a healthy machine does not produce on
// demand; they are not part of the interface and not in --help.
const (
	// envCopyDelay ("200ms") makes the follower copy only every so often: a slowed
	// copier that a writer can outrun.
	envCopyDelay = "LIVEMIG_TEST_COPY_DELAY"
	// envStallFrozen ("5s") holds the cutover that long with every process frozen (or
	// until SIGINT/SIGTERM): the window in which a test interrupts a cutover.
	envStallFrozen = "LIVEMIG_TEST_STALL_FROZEN"
	// envOverBudget ("1") makes that many post-freeze budget checks fail: the retry path.
	envOverBudget = "LIVEMIG_TEST_OVER_BUDGET"
)

func envDuration(name string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(name))
	return d
}

// migration is one `livemig migrate`.
type migration struct {
	cfg           cutover.Config
	budget        time.Duration
	settle        time.Duration
	timeout       time.Duration
	at            time.Time
	waitSignal    bool
	maxAttempts   int
	throttleLimit float64
	statusPath    string
	asJSON        bool

	con      *console
	log      *slog.Logger
	tr       *tracker
	rep      *reporter
	mirror   *livesync.Mirror
	follower *follower
	throttle *throttler
	usr1     chan os.Signal
	report   migrateReport
	overTest int    // envOverBudget checks left to fail
	srcDev   uint64 // SRC's device before any cutover
}

// migrateReport is the result, printed on stdout (--json: as is).
type migrateReport struct {
	Result    string           `json:"result"` // done, done-with-leftovers, rolled-back, not-converged, over-budget, timed-out, stopped, failed
	Error     string           `json:"error,omitempty"`
	Src       string           `json:"src"`
	Dst       string           `json:"dst"`
	BudgetNs  int64            `json:"budget_ns"`
	FirstPass int64            `json:"first_pass_ns"`
	WaitedNs  int64            `json:"waited_ns"` // from the end of the first pass to the last cutover attempt
	Predicted *pausePrediction `json:"predicted_pause,omitempty"`
	Attempts  []attemptReport  `json:"attempts"`
	Figures   *convergence     `json:"convergence,omitempty"` // the mirror's state when it gave up or cut over
	Cutover   *cutover.Report  `json:"cutover,omitempty"`     // the last attempt
	Verify    *postCheck       `json:"verify,omitempty"`
	Mirror    livesync.Stats   `json:"mirror"`
}

type attemptReport struct {
	Attempt    int    `json:"attempt"`
	Result     string `json:"result"`
	Error      string `json:"error,omitempty"`
	EstimateNs int64  `json:"final_delta_estimate_ns,omitempty"`
}

// convergence is the mirror against the writers, in figures.
type convergence struct {
	Lag              livesync.Lag `json:"lag"`
	Rates            Rates        `json:"rates"`
	EstimatedPauseNs int64        `json:"estimated_pause_ns"`
	ThrottleShare    float64      `json:"throttle_share,omitempty"`
}

// Results of a migrate beyond the cutover's own.
const (
	resultNotConverged = "not-converged"
	resultOverBudget   = "over-budget"
	resultStopped      = "stopped"
	resultFailed       = "failed"
)

func (mg *migration) main() error {
	mg.con = newConsole(os.Stderr)
	mg.log = mg.con.logger()
	mg.cfg.Log = mg.log
	if n, err := fmt.Sscan(os.Getenv(envOverBudget), &mg.overTest); n != 1 || err != nil {
		mg.overTest = 0
	}
	probe := mg.cfg
	probe.Delta = noDelta{}
	if err := cutover.Validate(&probe); err != nil {
		return usagef("%v", err)
	}
	mg.cfg.Src, mg.cfg.Dst = probe.Src, probe.Dst
	// The old storage's device, for the check after the cutover: with --remount, SRC's
	// path shows the new filesystem afterwards.
	var st unix.Stat_t
	if err := unix.Stat(mg.cfg.Src, &st); err != nil {
		return usagef("source %s: %v", mg.cfg.Src, err)
	}
	mg.srcDev = uint64(st.Dev)
	mg.report = migrateReport{Src: mg.cfg.Src, Dst: mg.cfg.Dst, BudgetNs: int64(mg.budget), Attempts: []attemptReport{}}

	// SIGUSR1 is subscribed before anything else, so that a signal sent early is not
	// the default action (which would kill us).
	if mg.waitSignal {
		mg.usr1 = make(chan os.Signal, 1)
		signal.Notify(mg.usr1, syscall.SIGUSR1)
		defer signal.Stop(mg.usr1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	explicit := mg.statusPath != ""
	if !explicit {
		mg.statusPath = defaultStatusPath("migrate", mg.cfg.Dst)
	}
	mg.tr = newTracker("migrate", mg.cfg.Src, mg.cfg.Dst)
	mg.tr.budget = mg.budget
	mg.rep = startReporter(mg.tr, mg.con, mg.log, newStatusFile(mg.statusPath, explicit, mg.log))

	err := mg.run(ctx)
	mg.throttle.stop()
	mg.closeMirror()
	var ue usageError
	if errors.As(err, &ue) {
		mg.tr.setPhase(phaseFailed, ue.msg)
		mg.rep.stop()
		return err
	}
	switch {
	case err == nil && mg.report.Result == cutover.ResultDone:
		mg.tr.setPhase(phaseDone, "")
	case err == nil:
		mg.tr.setPhase(phaseDone, mg.report.Result)
	case mg.report.Result == resultStopped:
		mg.tr.setPhase(phaseStopped, err.Error())
	default:
		mg.tr.setPhase(phaseFailed, err.Error())
	}
	if err != nil {
		mg.report.Error = err.Error()
		mg.tr.addError(err)
	}
	mg.rep.stop()
	mg.print(os.Stdout)
	if err != nil {
		return exitError{exitFailed, err}
	}
	if mg.report.Result == cutover.ResultWithLeftovers {
		return exitError{exitLeftovers, fmt.Errorf("done, with leftovers (listed in the report)")}
	}
	return nil
}

func (mg *migration) run(ctx context.Context) error {
	// waitCtx bounds everything before a freeze: --timeout, or a signal.
	waitCtx := ctx
	if mg.timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, mg.timeout)
		defer cancel()
	}
	countCtx, stopCount := context.WithCancel(ctx)
	defer stopCount()
	counted := make(chan struct{})
	go func() { mg.tr.count.count(countCtx, mg.cfg.Src); close(counted) }()
	defer func() { stopCount(); <-counted }() // it holds directories of SRC open

	m, err := livesync.New(livesync.Options{Src: mg.cfg.Src, Dst: mg.cfg.Dst, Delete: true, Logger: mg.log})
	var in *livesync.InputError
	if errors.As(err, &in) {
		return usagef("%v", in)
	}
	if err != nil {
		mg.report.Result = resultFailed
		return err
	}
	mg.mirror = m
	mg.tr.setMirror(m)
	start := time.Now()
	if err := m.InitialPass(waitCtx); err != nil {
		return mg.beforeFreeze(ctx, fmt.Errorf("first mirror pass: %w", err), "during the first pass")
	}
	mg.report.FirstPass = int64(time.Since(start))
	mg.log.Info("first mirror pass done", "elapsed", time.Since(start).Round(time.Millisecond))
	stopCount()
	<-counted
	following := time.Now()
	mg.follower = startFollower(m, envDuration(envCopyDelay))

	if err := mg.waitForMoment(waitCtx); err != nil {
		return mg.beforeFreeze(ctx, err, "while waiting for the cutover moment")
	}
	for attempt := 1; ; attempt++ {
		mg.tr.mu.Lock()
		mg.tr.attempt = attempt
		mg.tr.mu.Unlock()
		if err := mg.waitConverged(waitCtx); err != nil {
			return mg.beforeFreeze(ctx, err, "while waiting for the mirror to converge")
		}
		mg.throttle.stop() // the freezer alone holds the writers from here
		mg.throttle = nil
		mg.report.WaitedNs = int64(time.Since(following))
		mg.report.Figures = mg.figures()
		if d, err := cutover.Discover(mg.cfg.Src, cutover.Options{PIDs: mg.cfg.PIDs}); err == nil {
			lag := m.Lag()
			p := predictPause(d, &lag, "running mirror")
			mg.report.Predicted = &p
		}
		mg.tr.setPhase(phaseCutover, fmt.Sprintf("attempt %d of %d", attempt, mg.maxAttempts))
		mg.rep.refresh()
		rep, estimate, err := mg.cutover(ctx)
		mg.report.Cutover = rep
		a := attemptReport{Attempt: attempt, EstimateNs: int64(estimate)}
		if rep != nil {
			a.Result = rep.Result
		}
		var over *overBudgetError
		if errors.As(err, &over) {
			a.Error = over.Error()
			mg.report.Attempts = append(mg.report.Attempts, a)
			if attempt >= mg.maxAttempts {
				mg.report.Result = resultOverBudget
				return fmt.Errorf("attempt %d of %d: %v; giving up (every process was thawed, nothing changed)", attempt, mg.maxAttempts, over)
			}
			mg.log.Warn(fmt.Sprintf("cutover attempt %d of %d: %v; processes thawed, mirroring on, trying again", attempt, mg.maxAttempts, over))
			mg.tr.setPhase(phaseFollowing, fmt.Sprintf("after over-budget attempt %d", attempt))
			continue
		}
		if err != nil {
			a.Error = err.Error()
			mg.report.Attempts = append(mg.report.Attempts, a)
			var ie *cutover.InputError
			if errors.As(err, &ie) {
				return usagef("%v", ie)
			}
			mg.report.Result = cutover.ResultRolledBack
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted during the cutover; rolled back, every process resumed on the old storage: %w", err)
			}
			return fmt.Errorf("cutover rolled back, every process resumed on the old storage: %w", err)
		}
		mg.report.Attempts = append(mg.report.Attempts, a)
		mg.report.Result = rep.Result
		if ctx.Err() != nil {
			mg.log.Warn("interrupted too late: the cutover had committed, it is done")
		}
		break
	}
	mg.tr.setPhase(phaseVerifying, "")
	mg.report.Verify = checkMoved(mg.report.Cutover, mg.srcDev, mg.cfg)
	if !mg.report.Verify.OK {
		mg.report.Result = cutover.ResultWithLeftovers
		for _, s := range mg.report.Verify.StillOnOld {
			mg.log.Warn("still on the old storage after the cutover", "item", s)
		}
	}
	return nil
}

// beforeFreeze turns an error from before any freeze into the outcome: a signal is a
// clean stop, a deadline is a timeout with the convergence figures, anything else a
// failure. Nothing is frozen in any case.
func (mg *migration) beforeFreeze(ctx context.Context, err error, when string) error {
	switch {
	case ctx.Err() != nil:
		mg.report.Result = resultStopped
		return fmt.Errorf("interrupted %s: nothing was frozen; %s is a valid partial mirror", when, mg.cfg.Dst)
	case errors.Is(err, context.DeadlineExceeded):
		mg.report.Result = resultNotConverged
		f := mg.figures()
		mg.report.Figures = f
		if f == nil {
			return fmt.Errorf("--timeout %v reached %s: nothing was frozen", mg.timeout, when)
		}
		hint := "; --throttle SHARE would slow the writers down until it does"
		if mg.throttleLimit > 0 {
			hint = fmt.Sprintf("; even with the writers stopped %.0f%% of the time", 100*f.ThrottleShare)
		}
		return fmt.Errorf("--timeout %v reached %s: nothing was frozen. The mirror did not converge: "+
			"changes arrive at %.0f paths/s (%s/s) and the mirror copies %.0f paths/s (%s/s); "+
			"%d paths (%s) are dirty, the oldest for %v, and the final delta would take %v, over the --max-downtime of %v%s",
			mg.timeout, when, f.Rates.DirtyPathsPerSec, human(int64(f.Rates.DirtyBytesPerSec)),
			f.Rates.CopyPathsPerSec, human(int64(f.Rates.CopyBytesPerSec)), f.Lag.DirtyPaths, human(f.Lag.DirtyBytes),
			f.Lag.Oldest.Round(time.Millisecond), time.Duration(f.EstimatedPauseNs).Round(10*time.Microsecond), mg.budget, hint)
	default:
		mg.report.Result = resultFailed
		return err
	}
}

// figures samples the mirror for the report (nil before the first pass is done).
func (mg *migration) figures() *convergence {
	d := mg.tr.status()
	if d.Lag == nil {
		return nil
	}
	return &convergence{Lag: *d.Lag, Rates: d.Rates, EstimatedPauseNs: d.EstimatedPauseNs, ThrottleShare: d.ThrottleShare}
}

// waitForMoment waits for --at or SIGUSR1 while the mirror follows.
func (mg *migration) waitForMoment(ctx context.Context) error {
	switch {
	case mg.waitSignal:
		mg.tr.setPhase(phaseWaiting, fmt.Sprintf("for SIGUSR1 to pid %d", os.Getpid()))
		mg.log.Info("mirroring; send SIGUSR1 to start the cutover", "pid", os.Getpid())
		select {
		case <-mg.usr1:
			mg.log.Info("SIGUSR1: cutting over once converged")
		case <-ctx.Done():
			return ctx.Err()
		case err := <-mg.follower.failed():
			return err
		}
	case !mg.at.IsZero():
		mg.tr.setPhase(phaseWaiting, "until "+mg.at.Format("2006-01-02 15:04"))
		mg.log.Info("mirroring until the cutover moment", "at", mg.at.Format(time.DateTime))
		tm := time.NewTimer(time.Until(mg.at))
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-ctx.Done():
			return ctx.Err()
		case err := <-mg.follower.failed():
			return err
		}
	}
	return nil
}

// notConvergedWarnEvery is how often a mirror that does not converge says so.
const notConvergedWarnEvery = 30 * time.Second

// waitConverged returns once the estimated pause has stayed under the budget for
// --settle. With --throttle, every second spent over the budget stops the writers for
// a larger share of their time, up to the limit.
func (mg *migration) waitConverged(ctx context.Context) error {
	mg.tr.setPhase(phaseFollowing, "waiting to converge")
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// lastOver is the last time the estimate was over budget: the throttle is raised
	// once a second while that keeps happening. (A slow copier leaves the estimate
	// under budget for a moment after each batch: those moments do not count as
	// converging unless they last --settle.)
	var under, overSince, lastOver, lastRaise, lastWarn time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-mg.follower.failed():
			return fmt.Errorf("mirror stopped: %w", err)
		case now := <-tick.C:
			lag := mg.mirror.Lag()
			mg.tr.mu.Lock()
			overhead := mg.tr.overhead
			mg.tr.mu.Unlock()
			if !lag.Rescanning && lag.Estimate+overhead <= mg.budget {
				if now.Sub(lastOver) >= time.Second {
					overSince = time.Time{}
				}
				if under.IsZero() {
					under = now
				}
				if now.Sub(under) >= mg.settle {
					mg.log.Info("converged", "estimated_pause", (lag.Estimate + overhead).Round(10*time.Microsecond),
						"budget", mg.budget, "dirty_paths", lag.DirtyPaths, "dirty_bytes", lag.DirtyBytes)
					return nil
				}
				continue
			}
			under, lastOver = time.Time{}, now
			if overSince.IsZero() {
				overSince = now
			}
			if mg.throttleLimit > 0 && now.Sub(overSince) >= time.Second && now.Sub(lastRaise) >= time.Second {
				if mg.throttle == nil {
					t, err := startThrottler(mg.cfg.Src, mg.cfg.PIDs, mg.throttleLimit, mg.log)
					if err != nil {
						return err
					}
					mg.throttle = t
				}
				share := mg.throttle.raise()
				mg.tr.mu.Lock()
				mg.tr.throttle = share
				mg.tr.mu.Unlock()
				mg.tr.setPhase(phaseThrottled, "waiting to converge")
				lastRaise = now
			}
			if now.Sub(overSince) >= notConvergedWarnEvery && now.Sub(lastWarn) >= notConvergedWarnEvery {
				f := mg.figures()
				if f != nil {
					mg.log.Warn("the mirror is not converging: writes outrun the copy",
						"changes_per_sec", int64(f.Rates.DirtyPathsPerSec), "dirty_bytes_per_sec", int64(f.Rates.DirtyBytesPerSec),
						"copied_per_sec", int64(f.Rates.CopyPathsPerSec), "copy_bytes_per_sec", int64(f.Rates.CopyBytesPerSec),
						"estimated_pause", time.Duration(f.EstimatedPauseNs), "budget", mg.budget, "hint", "--throttle SHARE")
				}
				lastWarn = now
			}
		}
	}
}

// cutover runs one attempt. The final delta checks the budget first (see budgetDelta).
func (mg *migration) cutover(ctx context.Context) (*cutover.Report, time.Duration, error) {
	cfg := mg.cfg
	delta := &budgetDelta{mg: mg}
	cfg.Delta = delta
	if stall := envDuration(envStallFrozen); stall > 0 {
		cfg.Hook = func(point string, pid int) error {
			if point != "frozen" {
				return nil
			}
			mg.log.Info("test: holding the cutover with every process frozen", "for", stall)
			sleepCtx(ctx, stall)
			return ctx.Err()
		}
	}
	rep, err := cutover.Run(ctx, cfg)
	return rep, delta.estimate, err
}

// overBudgetError: after the freeze, the final delta would take longer than the budget.
type overBudgetError struct {
	estimate, budget time.Duration
	paths            int
	bytes            int64
	forced           bool // by the test knob envOverBudget
}

func (e *overBudgetError) Error() string {
	if e.forced {
		return fmt.Sprintf("after the freeze the final delta (%d paths, %s) would take %v, taken as over budget (test knob %s)",
			e.paths, human(e.bytes), e.estimate.Round(10*time.Microsecond), envOverBudget)
	}
	return fmt.Sprintf("after the freeze the final delta (%d paths, %s) would take %v, over the --max-downtime of %v",
		e.paths, human(e.bytes), e.estimate.Round(10*time.Microsecond), e.budget)
}

// budgetDelta is the final delta of a migrate: with the processes frozen it first
// checks that copying what is left fits the budget. If not, it returns an
// *overBudgetError with the mirror still following: the cutover rolls back (nothing has
// been swapped yet, so that is a thaw) and migrate tries again later. If it fits, it
// flushes and stops the mirror for good, as the cutover requires.
type budgetDelta struct {
	mg       *migration
	estimate time.Duration
}

func (b *budgetDelta) FinalDelta(ctx context.Context, paths []string) error {
	mg := b.mg
	lag := mg.mirror.Lag()
	rate := lag.Rate
	if rate <= 0 {
		rate = defaultCopyRate
	}
	var forced int64
	for _, p := range paths { // compared by content: read whole
		var st unix.Stat_t
		if unix.Stat(joinUnder(mg.cfg.Src, p), &st) == nil {
			forced += st.Size
		}
	}
	b.estimate = lag.Estimate + time.Duration(float64(forced)/rate*float64(time.Second))
	if mg.overTest > 0 {
		mg.overTest--
		return &overBudgetError{forced: true, estimate: b.estimate, budget: mg.budget, paths: lag.DirtyPaths + len(paths), bytes: lag.DirtyBytes + forced}
	}
	if b.estimate > mg.budget {
		return &overBudgetError{estimate: b.estimate, budget: mg.budget, paths: lag.DirtyPaths + len(paths), bytes: lag.DirtyBytes + forced}
	}
	mg.follower.stop() // the writers are frozen: what is left is queued; no batch in the flush's way
	return mg.mirror.Flush(ctx, paths)
}

// Release closes the mirror once the processes run again: it holds SRC open (with
// --remount the old filesystem must be free), and closing it takes milliseconds.
func (b *budgetDelta) Release() error {
	b.mg.closeMirror()
	return nil
}

// closeMirror stops following and closes the mirror, keeping its totals for the report.
func (mg *migration) closeMirror() {
	if mg.follower != nil {
		mg.follower.stop()
	}
	if mg.mirror == nil {
		return
	}
	mg.report.Mirror = mg.mirror.Stats()
	mg.tr.mirrorClosed(mg.report.Mirror)
	mg.mirror.Close()
	mg.mirror = nil
}

func joinUnder(src, p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	return src + "/" + p
}

// follower runs the mirror's Follow in the background until stopped.
type follower struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
	fail   chan error // receives Follow's error if it stops by itself
}

func startFollower(m *livesync.Mirror, delay time.Duration) *follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{cancel: cancel, done: make(chan error, 1), fail: make(chan error, 1)}
	go func() {
		var err error
		if delay > 0 {
			err = slowFollow(ctx, m, delay)
		} else {
			err = m.Follow(ctx)
		}
		if ctx.Err() == nil {
			f.fail <- err
		}
		f.done <- err
	}()
	return f
}

// slowFollow is the test-only slowed copier (envCopyDelay): it applies what is dirty
// only every delay.
func slowFollow(ctx context.Context, m *livesync.Mirror, delay time.Duration) error {
	for {
		sleepCtx(ctx, delay)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := m.Flush(ctx, nil); err != nil {
			return err
		}
	}
}

func (f *follower) failed() <-chan error { return f.fail }

func (f *follower) stop() {
	f.once.Do(func() {
		f.cancel()
		f.err = <-f.done
	})
}

// print writes the report: JSON with --json, else text.
func (mg *migration) print(w io.Writer) {
	r := &mg.report
	if mg.asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
		return
	}
	fmt.Fprintf(w, "migrate %s -> %s: %s\n", r.Src, r.Dst, r.Result)
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
	fmt.Fprintf(w, "  first pass %v, then mirrored %v before the cutover; budget %v\n",
		time.Duration(r.FirstPass).Round(time.Millisecond), time.Duration(r.WaitedNs).Round(time.Millisecond), time.Duration(r.BudgetNs))
	if p := r.Predicted; p != nil {
		fmt.Fprintf(w, "  predicted pause %v (overhead %v, final delta %v)\n", time.Duration(p.PauseNs).Round(10*time.Microsecond),
			time.Duration(p.OverheadNs).Round(10*time.Microsecond), time.Duration(p.DeltaNs).Round(10*time.Microsecond))
	}
	for _, a := range r.Attempts {
		fmt.Fprintf(w, "  attempt %d: %s %s\n", a.Attempt, a.Result, a.Error)
	}
	if r.Cutover != nil {
		printReport(w, r.Cutover, false)
	}
	if v := r.Verify; v != nil {
		fmt.Fprintf(w, "  verify: %d processes checked in /proc", v.Processes)
		if v.OK {
			fmt.Fprintln(w, ": nothing moved is left on the old storage")
		} else {
			fmt.Fprintf(w, ": %d items still on the old storage\n", len(v.StillOnOld))
		}
		for _, s := range v.StillOnOld {
			fmt.Fprintf(w, "    %s\n", s)
		}
	}
}
