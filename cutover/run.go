package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/inject"
)

// FreezeMode is how the processes are held still.
type FreezeMode string

const (
	FreezeSigstop FreezeMode = "sigstop" // SIGSTOP/SIGCONT, as the manual recipes do
	FreezePtrace  FreezeMode = "ptrace"  // ptrace interrupt: the parent sees nothing
)

// Delta is the final copy: the mirror's flush. Cutover does not know how it is done.
type Delta interface {
	// FinalDelta makes DST match SRC for paths (relative to SRC; compared by content)
	// and for every change seen so far, and stops the mirror writing for good: after a
	// cutover the processes write to DST, which no mirror may overwrite. It runs inside
	// the pause.
	FinalDelta(ctx context.Context, paths []string) error
	// Release lets go of what the mirror holds, called once a committed cutover has
	// resumed the processes: closing an inotify instance waits for a kernel grace period
	// (milliseconds that do not belong in the pause), and the old filesystem cannot be
	// unmounted while watches and open directories hold it. After a rollback the caller
	// keeps the mirror and decides.
	Release() error
}

// Config is one cutover.
type Config struct {
	Src, Dst string
	Remount  bool       // mount DST's filesystem on SRC's path (SRC and DST are mount points)
	Freeze   FreezeMode // default sigstop
	PIDs     []int      // only these processes (and their threads)
	Strict   bool       // leftovers are a failure
	Delta    Delta
	// Guardian says how to start the guardian process (sigstop mode); its zero value
	// re-executes the running binary, which must then be livemig.
	Guardian GuardianOptions
	Log      *slog.Logger
	// Hook, if set, is called at these points: "frozen" (every process frozen and
	// attached; pid 0), "before-swap" and "swapped" (per process). An error from it
	// fails the cutover there. Tests use it to stall or break a step; it may be called
	// from several goroutines at once.
	Hook func(point string, pid int) error
}

// InputError is bad input, found before anything is frozen (exit 2).
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

func inputErrorf(format string, a ...any) error { return &InputError{fmt.Sprintf(format, a...)} }

// Validate checks cfg before anything is touched.
func Validate(cfg *Config) error {
	if os.Geteuid() != 0 {
		return inputErrorf("cutover needs root (ptrace, signals to other users' processes, mount)")
	}
	for _, p := range []*string{&cfg.Src, &cfg.Dst} {
		abs, err := filepath.Abs(*p)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			return inputErrorf("%s: %v", *p, unwrapPath(err))
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return inputErrorf("%s: not a directory", abs)
		}
		*p = abs
	}
	switch {
	case cfg.Src == cfg.Dst:
		return inputErrorf("SRC and DST are the same directory: %s", cfg.Src)
	case within(cfg.Dst, cfg.Src):
		return inputErrorf("DST %s is inside SRC %s", cfg.Dst, cfg.Src)
	case within(cfg.Src, cfg.Dst):
		return inputErrorf("SRC %s is inside DST %s", cfg.Src, cfg.Dst)
	}
	switch cfg.Freeze {
	case "":
		cfg.Freeze = FreezeSigstop
	case FreezeSigstop, FreezePtrace:
	default:
		return inputErrorf("--freeze %q: want sigstop or ptrace", cfg.Freeze)
	}
	if cfg.Remount {
		for _, p := range []string{cfg.Src, cfg.Dst} {
			s, err := ResolveSource(p)
			if err != nil {
				return inputErrorf("%v", err)
			}
			if !s.MountPoint {
				return inputErrorf("--remount: %s is not a mount point", p)
			}
		}
	}
	if cfg.Delta == nil {
		return inputErrorf("no final delta (mirror) given")
	}
	if len(cfg.PIDs) > 0 {
		if _, err := Discover(cfg.Src, Options{PIDs: cfg.PIDs}); err != nil {
			return asInputError(err)
		}
	}
	return nil
}

// asInputError makes a requested pid that is missing or does not use SRC bad input.
func asInputError(err error) error {
	var nsp *NoSuchProcessError
	var nus *NotUsingSourceError
	if errors.As(err, &nsp) || errors.As(err, &nus) {
		return &InputError{err.Error()}
	}
	return err
}

func within(path, dir string) bool { return strings.HasPrefix(path, dir+"/") }

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Run moves every process that uses cfg.Src onto cfg.Dst: discover, freeze, final
// delta, remount, swap, verify, then commit and resume — or, on any failure before the
// commit, roll every process back and resume it. The report is returned in both cases;
// the error says why it was rolled back (or is an *InputError: nothing was done).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := Validate(&cfg); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &cutover{cfg: cfg, clock: newMonoClock(), movers: map[int]*mover{}}
	c.report = &Report{Src: cfg.Src, Dst: cfg.Dst, Remount: cfg.Remount, Freeze: string(cfg.Freeze), Clock: "CLOCK_MONOTONIC"}
	err := c.run(ctx)
	c.finishReport(err)
	return c.report, err
}

type cutover struct {
	cfg     Config
	clock   monoClock
	report  *Report
	freezer holder
	ptrace  bool // the freezer holds the processes through ptrace until thaw
	guard   *Guardian
	disc    *Discovery
	movers  map[int]*mover
	order   []int
	remount *remount
}

func (c *cutover) run(ctx context.Context) (err error) {
	if err := c.phase("discover", func() error {
		d, err := Discover(c.cfg.Src, Options{PIDs: c.cfg.PIDs})
		c.disc = d
		return asInputError(err)
	}); err != nil {
		return err
	}

	if err := c.startFreezer(); err != nil {
		return err
	}
	// No garbage collection inside the pause: collect now, and let the heap grow until
	// the processes run again (the pause allocates little).
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	defer func() {
		if err != nil {
			err = errors.Join(err, c.rollback())
		}
	}()

	if err := c.phase("freeze", func() error {
		d, err := FreezeUsers(ctx, c.cfg.Src, Options{PIDs: c.cfg.PIDs, Exclude: c.excluded()}, c.freezer)
		if err != nil {
			return err
		}
		c.disc = d
		if err := c.attach(); err != nil {
			return err
		}
		return c.hook("frozen", 0)
	}); err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	if err := c.phase("final-delta", func() error {
		return c.cfg.Delta.FinalDelta(ctx, c.flushPaths())
	}); err != nil {
		return fmt.Errorf("final delta: %w", err)
	}
	if c.cfg.Remount {
		if err := c.phase("remount", func() (err error) {
			c.remount, err = putAside(c.cfg.Src, c.cfg.Dst)
			return err
		}); err != nil {
			return fmt.Errorf("remount: %w", err)
		}
	}
	if err := c.phase("swap", func() error {
		return c.eachMover(func(m *mover) error {
			if err := c.hook("before-swap", m.proc.PID); err != nil {
				return err
			}
			if err := m.swap(); err != nil {
				return err
			}
			return c.hook("swapped", m.proc.PID)
		})
	}); err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	if c.cfg.Strict {
		n := 0
		for _, m := range c.movers {
			n += len(m.leftovers)
		}
		if n > 0 {
			return fmt.Errorf("%w: %d things cannot be moved (see the leftovers)", ErrLeftovers, n)
		}
	}
	if err := c.phase("verify", func() error {
		if err := c.freezer.Check(); err != nil {
			return err
		}
		return c.eachMover((*mover).verify)
	}); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return c.phase("resume", c.commit)
}

func (c *cutover) hook(point string, pid int) error {
	if c.cfg.Hook == nil {
		return nil
	}
	return c.cfg.Hook(point, pid)
}

// phase runs f and records its start and duration.
func (c *cutover) phase(name string, f func() error) error {
	start := time.Now()
	err := f()
	c.report.Phases = append(c.report.Phases, Phase{Name: name, StartNs: c.clock.ns(start), DurationNs: time.Since(start).Nanoseconds()})
	return err
}

func (c *cutover) startFreezer() error {
	if c.cfg.Freeze == FreezePtrace {
		// A ptrace freeze needs no guardian: if livemig dies, the kernel detaches its
		// tracees, and they run on.
		c.freezer, c.ptrace = NewPtraceFreezer(), true
		return nil
	}
	g, err := StartGuardian(c.cfg.Guardian)
	if err != nil {
		return fmt.Errorf("start guardian: %w", err)
	}
	c.guard = g
	c.freezer = newAttachingFreezer(NewSignalFreezer(g))
	return nil
}

func (c *cutover) excluded() []int {
	if c.guard != nil {
		return []int{c.guard.PID()}
	}
	return nil
}

// attach collects the ptrace handle of every frozen process (the freezer attached them)
// and makes its mover.
func (c *cutover) attach() error {
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(8)
	for i := range c.disc.Processes {
		proc := &c.disc.Processes[i]
		g.Go(func() error {
			ip, err := c.freezer.process(proc.PID)
			if errors.Is(err, inject.ErrNoProcess) {
				return nil // exited while frozen: nothing left to move
			}
			if err != nil {
				return err
			}
			m := newMover(proc, ip, c.paths(), c.ptrace)
			mu.Lock()
			c.movers[proc.PID] = m
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	for _, p := range c.disc.Processes {
		if _, ok := c.movers[p.PID]; ok {
			c.order = append(c.order, p.PID)
		}
	}
	return err
}

// paths maps a path below SRC to where it is now and where it goes.
func (c *cutover) paths() pathMap {
	return pathMap{c: c}
}

type pathMap struct{ c *cutover }

// old is where rel is reached on the old storage while the cutover runs.
func (m pathMap) old(rel string) string {
	if m.c.remount != nil {
		return filepath.Join(m.c.remount.aside, rel)
	}
	return filepath.Join(m.c.cfg.Src, rel)
}

// new is where rel is on the new storage, as the processes will name it.
func (m pathMap) new(rel string) string {
	if m.c.cfg.Remount {
		return filepath.Join(m.c.cfg.Src, rel)
	}
	return filepath.Join(m.c.cfg.Dst, rel)
}

// flushPaths are the files the final delta must compare by content: those a frozen
// process has open for writing or mapped shared and writable (writes through a mapping
// raise no inotify event).
func (c *cutover) flushPaths() []string {
	seen := map[string]bool{}
	var paths []string
	add := func(n Node) {
		if n.Deleted || seen[n.Rel] {
			return
		}
		seen[n.Rel] = true
		paths = append(paths, n.Rel)
	}
	for _, p := range c.disc.Processes {
		for _, fd := range p.FDs {
			if fd.Kind == KindFile && fd.Flags&unix.O_ACCMODE != unix.O_RDONLY {
				add(fd.Node)
			}
		}
		for _, mp := range p.Maps {
			if mp.Kind == KindSharedMap && mp.Prot&unix.PROT_WRITE != 0 {
				add(mp.Node)
			}
		}
	}
	return paths
}

// eachMover runs f for every process at once (each has its own tracer thread).
func (c *cutover) eachMover(f func(*mover) error) error {
	var g errgroup.Group
	g.SetLimit(8)
	for _, pid := range c.order {
		m := c.movers[pid]
		g.Go(func() error { return f(m) })
	}
	return g.Wait()
}

// commit drops the spares, lets the processes go and resumes them; from here on
// nothing is rolled back.
func (c *cutover) commit() error {
	var mu sync.Mutex
	var errs []error
	_ = c.eachMover(func(m *mover) error {
		if err := m.commit(); err != nil {
			mu.Lock()
			errs = append(errs, err) // a spare left open in the process: harmless
			mu.Unlock()
		}
		return nil
	})
	if err := c.freezer.Thaw(); err != nil {
		errs = append(errs, err)
	}
	if err := c.cfg.Delta.Release(); err != nil {
		errs = append(errs, fmt.Errorf("release the mirror: %w", err))
	}
	if c.guard != nil {
		if err := c.guard.Release(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.remount != nil {
		if err := c.remount.finish(); err != nil {
			c.report.Leftovers = append(c.report.Leftovers, ReportLeftover{What: "old filesystem", Path: c.remount.aside, Reason: err.Error()})
		}
	}
	if len(errs) > 0 {
		c.cfg.Log.Warn("cutover committed with problems", "err", errors.Join(errs...))
	}
	return nil
}

// rollback puts every process back on the old storage, undoes the remount and resumes
// everything that was frozen.
func (c *cutover) rollback() error {
	var errs []error
	for i := len(c.order) - 1; i >= 0; i-- {
		if err := c.movers[c.order[i]].rollback(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.remount != nil {
		if err := c.remount.undo(); err != nil {
			errs = append(errs, err)
		}
		c.remount = nil
	}
	if c.freezer != nil {
		if err := c.freezer.Thaw(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.guard != nil {
		if err := c.guard.Release(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("rollback: %w", errors.Join(errs...))
	}
	return nil
}
