package cutover

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/livemig/livemig/inject"
)

// PtraceFreezer holds processes with ptrace alone: every thread is interrupted, and
// neither the process nor its parent sees a stop (no SIGSTOP, no SIGCHLD). If livemig
// dies, the kernel detaches the tracees and they run on: no guardian is needed.
type PtraceFreezer struct {
	mu    sync.Mutex
	procs map[int]*ptraceFrozen
	order []int
}

type ptraceFrozen struct {
	FrozenProcess
	ip *inject.Process
}

func NewPtraceFreezer() *PtraceFreezer { return &PtraceFreezer{procs: map[int]*ptraceFrozen{}} }

// Process is the attached process of pid, or nil (also on a nil freezer).
func (f *PtraceFreezer) Process(pid int) *inject.Process {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.procs[pid]; p != nil && !p.Exited {
		return p.ip
	}
	return nil
}

func (f *PtraceFreezer) Freeze(ctx context.Context, targets []Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range targets {
		if prev, ok := f.procs[t.PID]; ok && prev.StartTime == t.StartTime {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		if now, err := TargetOf(t.PID); err != nil || now.StartTime != t.StartTime {
			continue // exited, or the pid is someone else's now
		}
		ip, err := inject.Attach(t.PID)
		if errors.Is(err, inject.ErrNoProcess) {
			continue
		}
		if err != nil {
			return &FreezeError{PID: t.PID, Err: err}
		}
		f.procs[t.PID] = &ptraceFrozen{ip: ip, FrozenProcess: FrozenProcess{Target: t, SignaledAt: start, StoppedAt: time.Now()}}
		f.order = append(f.order, t.PID)
	}
	return nil
}

// Check has nothing to check: no one but the tracer can resume a tracee.
func (f *PtraceFreezer) Check() error { return nil }

func (f *PtraceFreezer) Thaw() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, pid := range f.order {
		p := f.procs[pid]
		if !p.ResumedAt.IsZero() || p.Exited {
			continue
		}
		resumed := time.Now() // before the detach: the process cannot run earlier
		if err := p.ip.Detach(); err != nil {
			if errors.Is(err, inject.ErrExited) {
				p.Exited = true
				continue
			}
			errs = append(errs, fmt.Errorf("thaw pid %d: %w", pid, err))
		}
		p.ResumedAt = resumed
	}
	return errors.Join(errs...)
}

func (f *PtraceFreezer) Frozen() []FrozenProcess {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FrozenProcess, 0, len(f.order))
	for _, pid := range f.order {
		out = append(out, f.procs[pid].FrozenProcess)
	}
	return out
}
