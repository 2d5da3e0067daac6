package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
)

// throttler is the auto-converge of VM live migration applied to processes: when writes
// outrun the mirror, the writers are stopped (SIGSTOP) for a slice of every period and
// resumed (SIGCONT) for the rest, so that they dirty less and the mirror catches up.
// The share of their time they are stopped starts small and grows while the mirror does
// not converge, never beyond the cap the operator gave.
//
// A guardian (the cutover's) is told of every process before its first stop: if
// livemig dies in the middle of a slice, the guardian resumes it. No process is ever
// left stopped.
type throttler struct {
	src   string
	pids  []int // --pid: only these
	limit float64
	log   *slog.Logger
	guard *cutover.Guardian

	mu      sync.Mutex
	share   float64
	targets map[cutover.Target]int // -> pidfd
	cancel  context.CancelFunc
	done    chan struct{}
}

const (
	throttlePeriod   = 100 * time.Millisecond // one stop slice and one run slice
	throttleStart    = 0.2                    // the first share, as QEMU's cpu-throttle-initial
	throttleStep     = 0.1                    // added each raise, as cpu-throttle-increment
	throttleRediscov = time.Second            // new writers are picked up this often
)

func startThrottler(src string, pids []int, limit float64, log *slog.Logger) (*throttler, error) {
	g, err := cutover.StartGuardian(cutover.GuardianOptions{})
	if err != nil {
		return nil, fmt.Errorf("throttle: start guardian: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &throttler{src: src, pids: pids, limit: limit, log: log, guard: g,
		targets: map[cutover.Target]int{}, cancel: cancel, done: make(chan struct{})}
	go t.loop(ctx)
	return t, nil
}

// raise stops the writers for a larger share of their time, up to the limit; it returns
// the share now.
func (t *throttler) raise() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := min(t.limit, max(throttleStart, math.Round((t.share+throttleStep)*100)/100))
	if next > t.share {
		t.share = next
		t.log.Info("throttling the writers", "stopped_share", fmt.Sprintf("%.0f%%", 100*next), "limit", fmt.Sprintf("%.0f%%", 100*t.limit))
	}
	return t.share
}

func (t *throttler) current() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.share
}

func (t *throttler) loop(ctx context.Context) {
	defer close(t.done)
	defer t.signalAll(unix.SIGCONT) // whatever happened, they run again
	var found time.Time
	for ctx.Err() == nil {
		if time.Since(found) >= throttleRediscov {
			t.rediscover()
			found = time.Now()
		}
		stopFor := time.Duration(t.current() * float64(throttlePeriod))
		if stopFor > 0 {
			t.signalAll(unix.SIGSTOP)
			sleepCtx(ctx, stopFor)
			t.signalAll(unix.SIGCONT)
		}
		sleepCtx(ctx, throttlePeriod-stopFor)
	}
}

// rediscover finds the processes that use SRC now; each is told to the guardian before
// it is ever stopped.
func (t *throttler) rediscover() {
	d, err := cutover.Discover(t.src, cutover.Options{PIDs: t.pids, Exclude: []int{t.guard.PID()}})
	if err != nil {
		t.log.Warn("throttle: discovery", "err", err)
		return
	}
	seen := map[cutover.Target]bool{}
	for _, p := range d.Processes {
		seen[p.Target] = true
		if _, ok := t.targets[p.Target]; ok {
			continue
		}
		fd, err := unix.PidfdOpen(p.PID, 0)
		if err != nil {
			continue // gone already
		}
		// The pidfd pins the process; check it is still the one discovered.
		if now, err := cutover.TargetOf(p.PID); err != nil || now != p.Target {
			unix.Close(fd)
			continue
		}
		if err := t.guard.Protect(p.Target); err != nil {
			unix.Close(fd)
			t.log.Warn("throttle: guardian refused a process; not throttling it", "pid", p.PID, "err", err)
			continue
		}
		t.targets[p.Target] = fd
	}
	for tg, fd := range t.targets {
		if !seen[tg] {
			_ = unix.PidfdSendSignal(fd, unix.SIGCONT, nil, 0)
			unix.Close(fd)
			delete(t.targets, tg)
		}
	}
}

func (t *throttler) signalAll(sig unix.Signal) {
	for tg, fd := range t.targets {
		if err := unix.PidfdSendSignal(fd, sig, nil, 0); err == unix.ESRCH {
			unix.Close(fd)
			delete(t.targets, tg)
		}
	}
}

// stop ends the throttling: every writer runs, and the guardian is released.
func (t *throttler) stop() {
	if t == nil {
		return
	}
	t.cancel()
	<-t.done
	for tg, fd := range t.targets {
		unix.Close(fd)
		delete(t.targets, tg)
	}
	if err := t.guard.Release(); err != nil {
		t.log.Warn("throttle: release guardian", "err", err)
	}
	t.mu.Lock()
	t.share = 0
	t.mu.Unlock()
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}
