package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	livesync "github.com/livemig/livemig/sync"
)

// Phases a running sync or migrate goes through, as the display and the status file name
// them.
const (
	phaseFirstPass = "first-pass"
	phaseFollowing = "following"  // sync: following; migrate: waiting to converge
	phaseWaiting   = "waiting"    // migrate: converged or not, waiting for --at / SIGUSR1
	phaseCutover   = "cutover"    // processes may be frozen
	phaseVerifying = "verifying"  // after the cutover
	phaseDone      = "done"       // final states: the process has exited or is about to
	phaseFailed    = "failed"     //
	phaseStopped   = "stopped"    // SIGINT/SIGTERM before anything was frozen
	phaseThrottled = "throttling" // migrate --throttle: writers are being slowed
)

// treeCount is what the first pass has to look at, counted by a walk of SRC beside the
// copy, so that progress can be shown as "done of total" with an ETA.
type treeCount struct {
	entries, bytes atomic.Int64
	done           atomic.Bool
}

// count walks src (directories opened with O_NOATIME: SRC is never touched, atime
// included) and adds up entries and the size of regular files. It stops early when ctx
// is done; errors only make the total smaller, which the display shows as "counting".
func (c *treeCount) count(ctx context.Context, src string) {
	defer c.done.Store(true)
	var walk func(dir string)
	walk = func(dir string) {
		if ctx.Err() != nil {
			return
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EPERM) { // O_NOATIME needs ownership or CAP_FOWNER
			fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return
		}
		f := os.NewFile(uintptr(fd), dir)
		names, _ := f.Readdirnames(-1)
		for _, name := range names {
			var st unix.Stat_t
			if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue
			}
			c.entries.Add(1)
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				c.bytes.Add(st.Size)
			case unix.S_IFDIR:
				walk(dir + "/" + name)
			}
		}
		f.Close()
	}
	walk(src)
}

// rateSample is one look at the mirror, to derive rates over a window.
type rateSample struct {
	at                     time.Time
	dirtyPaths, dirtyBytes int64
	donePaths, doneBytes   int64 // paths handled and bytes written since the mirror started
}

// Rates are how fast changes arrive at SRC and how fast the mirror copies them, over the
// last few seconds. Arrivals are derived: what is dirty now, minus what was dirty before,
// plus what was copied meanwhile.
type Rates struct {
	DirtyPathsPerSec float64 `json:"dirty_paths_per_sec"`
	DirtyBytesPerSec float64 `json:"dirty_bytes_per_sec"`
	CopyPathsPerSec  float64 `json:"copy_paths_per_sec"`
	CopyBytesPerSec  float64 `json:"copy_bytes_per_sec"`
}

// rateWindow is how far back rates look: long enough to smooth bursts, short enough to
// see a throttle take effect.
const rateWindow = 5 * time.Second

// tracker is the shared view of a running sync or migrate: the progress display and the
// status file both render it.
type tracker struct {
	command, src, dst string
	started           time.Time
	count             treeCount

	mu         sync.Mutex
	phase      string
	detail     string // a phrase about the phase: "waiting for SIGUSR1", "attempt 2 of 3"
	phaseSince time.Time
	mirror     *livesync.Mirror
	budget     time.Duration
	overhead   time.Duration // predicted pause beyond the final delta (see pausemodel.go)
	throttle   float64       // share of the writers' time they are stopped now
	attempt    int
	errors     []string
	samples    []rateSample
	final      *livesync.Stats // the mirror's totals once it is closed
}

func newTracker(command, src, dst string) *tracker {
	now := time.Now()
	return &tracker{command: command, src: src, dst: dst, started: now, phase: phaseFirstPass, phaseSince: now}
}

func (t *tracker) setPhase(phase, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if phase != t.phase {
		t.phaseSince = time.Now()
	}
	t.phase, t.detail = phase, detail
}

func (t *tracker) currentPhase() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.phase
}

func (t *tracker) setMirror(m *livesync.Mirror) {
	t.mu.Lock()
	t.mirror = m
	t.mu.Unlock()
}

// mirrorClosed keeps the mirror's last totals: it must not be asked once closed.
func (t *tracker) mirrorClosed(s livesync.Stats) {
	t.mu.Lock()
	t.mirror, t.final = nil, &s
	t.mu.Unlock()
}

func (t *tracker) addError(err error) {
	t.mu.Lock()
	t.errors = append(t.errors, err.Error())
	t.mu.Unlock()
}

// status is the state now; it samples the mirror (a Lag call stats the dirty paths).
func (t *tracker) status() statusDoc {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	d := statusDoc{
		Command: t.command, PID: os.Getpid(), Src: t.src, Dst: t.dst,
		Phase: t.phase, Detail: t.detail, Started: t.started, PhaseSince: t.phaseSince, Updated: now,
		BudgetNs: int64(t.budget), ThrottleShare: t.throttle, Attempt: t.attempt,
		Errors: append([]string(nil), t.errors...),
	}
	if t.final != nil {
		d.Stats = *t.final
	}
	if t.mirror == nil {
		return d
	}
	d.Stats = t.mirror.Stats()
	d.Stats.Errors = nil // the latest per-path problems go to the log; the count stays
	if t.phase == phaseFirstPass {
		p := &passProgress{
			EntriesDone: d.Stats.Entries, EntriesTotal: t.count.entries.Load(),
			BytesDone: d.Stats.BytesRead, BytesTotal: t.count.bytes.Load(), Counting: !t.count.done.Load(),
		}
		if el := now.Sub(t.started).Seconds(); el > 0.5 {
			p.EntriesPerSec, p.BytesPerSec = float64(p.EntriesDone)/el, float64(p.BytesDone)/el
			if !p.Counting {
				p.ETANs = int64(eta(p.EntriesTotal-p.EntriesDone, p.EntriesPerSec, p.BytesTotal-p.BytesDone, p.BytesPerSec))
			}
		}
		d.FirstPass = p
		return d
	}
	lag := t.mirror.Lag()
	d.Lag = &lag
	d.EstimatedPauseNs = int64(lag.Estimate + t.overhead)
	s := rateSample{at: now, dirtyPaths: int64(lag.DirtyPaths), dirtyBytes: lag.DirtyBytes,
		donePaths: d.Stats.FilesCopied + d.Stats.MetaOnly + d.Stats.Created + d.Stats.Deleted + d.Stats.Renamed + d.Stats.Linked,
		doneBytes: d.Stats.BytesWritten}
	t.samples = append(t.samples, s)
	for len(t.samples) > 2 && now.Sub(t.samples[1].at) >= rateWindow {
		t.samples = t.samples[1:]
	}
	if old := t.samples[0]; now.Sub(old.at) > 200*time.Millisecond {
		el := now.Sub(old.at).Seconds()
		r := &d.Rates
		r.CopyPathsPerSec = float64(s.donePaths-old.donePaths) / el
		r.CopyBytesPerSec = float64(s.doneBytes-old.doneBytes) / el
		r.DirtyPathsPerSec = max(0, float64(s.dirtyPaths-old.dirtyPaths)/el+r.CopyPathsPerSec)
		r.DirtyBytesPerSec = max(0, float64(s.dirtyBytes-old.dirtyBytes)/el+r.CopyBytesPerSec)
	}
	return d
}

// eta is the longer of the times the remaining entries and bytes take at their rates.
func eta(entries int64, entriesPerSec float64, bytes int64, bytesPerSec float64) time.Duration {
	var e time.Duration
	if entries > 0 && entriesPerSec > 0 {
		e = time.Duration(float64(entries) / entriesPerSec * float64(time.Second))
	}
	if bytes > 0 && bytesPerSec > 0 {
		e = max(e, time.Duration(float64(bytes)/bytesPerSec*float64(time.Second)))
	}
	return e
}

// progressLine renders a status as the one line shown on a terminal.
func progressLine(d statusDoc) string {
	head := d.Phase
	if d.Detail != "" {
		head += " (" + d.Detail + ")"
	}
	if p := d.FirstPass; p != nil {
		total, etaText := "?", "?"
		if !p.Counting {
			total, etaText = fmt.Sprint(p.EntriesTotal), time.Duration(p.ETANs).Round(time.Second).String()
		} else if p.EntriesTotal > 0 {
			total = fmt.Sprintf("%d+", p.EntriesTotal)
		}
		return fmt.Sprintf("%s: %d/%s entries, %s/%s, %s/s, ETA %s", head, p.EntriesDone, total,
			human(p.BytesDone), human(p.BytesTotal), human(int64(p.BytesPerSec)), etaText)
	}
	if l := d.Lag; l != nil {
		line := fmt.Sprintf("%s: lag %v, dirty %d paths %s, est. pause %v", head,
			l.Oldest.Round(time.Millisecond), l.DirtyPaths, human(l.DirtyBytes),
			time.Duration(d.EstimatedPauseNs).Round(100*time.Microsecond))
		if d.BudgetNs > 0 {
			line += fmt.Sprintf(" (budget %v)", time.Duration(d.BudgetNs))
		}
		line += fmt.Sprintf(", changes %.0f/s, copied %.0f/s %s/s", d.Rates.DirtyPathsPerSec, d.Rates.CopyPathsPerSec, human(int64(d.Rates.CopyBytesPerSec)))
		if d.ThrottleShare > 0 {
			line += fmt.Sprintf(", writers stopped %.0f%%", 100*d.ThrottleShare)
		}
		return line
	}
	return head
}

// logProgress logs a status as one slog record (the display when stderr is no terminal).
func logProgress(log *slog.Logger, d statusDoc) {
	if p := d.FirstPass; p != nil {
		log.Info(d.Phase, "entries_done", p.EntriesDone, "entries_total", p.EntriesTotal, "counting", p.Counting,
			"bytes_done", p.BytesDone, "bytes_total", p.BytesTotal, "bytes_per_sec", int64(p.BytesPerSec),
			"eta", time.Duration(p.ETANs).Round(time.Second))
		return
	}
	if l := d.Lag; l != nil {
		log.Info(d.Phase, "detail", d.Detail, "lag", l.Oldest.Round(time.Millisecond), "dirty_paths", l.DirtyPaths,
			"dirty_bytes", l.DirtyBytes, "estimated_pause", time.Duration(d.EstimatedPauseNs).Round(10*time.Microsecond),
			"changes_per_sec", int64(d.Rates.DirtyPathsPerSec), "copied_per_sec", int64(d.Rates.CopyPathsPerSec),
			"copy_bytes_per_sec", int64(d.Rates.CopyBytesPerSec), "throttle", d.ThrottleShare)
	}
}

// human spells a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// reporter shows progress and keeps the status file fresh until stopped: a redraw every
// 200 ms on a terminal, a log record every logEvery otherwise, the status file every
// 500 ms.
type reporter struct {
	t       *tracker
	con     *console
	log     *slog.Logger
	status  *statusFile
	stopped chan struct{}
	done    chan struct{}
}

const logEvery = 5 * time.Second

func startReporter(t *tracker, con *console, log *slog.Logger, sf *statusFile) *reporter {
	r := &reporter{t: t, con: con, log: log, status: sf, stopped: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *reporter) loop() {
	defer close(r.done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastLog, lastWrite time.Time
	for {
		select {
		case <-r.stopped:
			r.con.clear()
			r.status.write(r.t.status())
			return
		case now := <-tick.C:
			if !r.con.tty && now.Sub(lastLog) < logEvery && now.Sub(lastWrite) < 500*time.Millisecond {
				continue // nothing due: spare the mirror a Lag call
			}
			d := r.t.status()
			if r.con.tty {
				r.con.show(progressLine(d))
			} else if now.Sub(lastLog) >= logEvery {
				logProgress(r.log, d)
				lastLog = now
			}
			if now.Sub(lastWrite) >= 500*time.Millisecond {
				r.status.write(d)
				lastWrite = now
			}
		}
	}
}

// refresh writes the status file now (after a phase change that matters to a reader).
func (r *reporter) refresh() { r.status.write(r.t.status()) }

// stop clears the display and writes the last status.
func (r *reporter) stop() {
	close(r.stopped)
	<-r.done
}
