package cutover

import (
	"context"
	"errors"
	"sync"

	"github.com/livemig/livemig/inject"
)

// holder hands out the ptrace handle of a frozen process, for the swap.
type holder interface {
	Freezer
	process(pid int) (*inject.Process, error)
}

// attachingFreezer is a freezer that attaches (ptrace) every process as soon as it is
// frozen, in the background, so that the attaches overlap the rediscovery that follows
// each freeze instead of lengthening the pause after it.
type attachingFreezer struct {
	Freezer
	mu       sync.Mutex
	attaches map[Target]*attachment
}

type attachment struct {
	done chan struct{}
	ip   *inject.Process
	err  error
}

func newAttachingFreezer(f Freezer) *attachingFreezer {
	return &attachingFreezer{Freezer: f, attaches: map[Target]*attachment{}}
}

func (a *attachingFreezer) Freeze(ctx context.Context, targets []Target) error {
	err := a.Freezer.Freeze(ctx, targets)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, fp := range a.Freezer.Frozen() {
		if fp.Exited || a.attaches[fp.Target] != nil {
			continue
		}
		at := &attachment{done: make(chan struct{})}
		a.attaches[fp.Target] = at
		go func(pid int) {
			defer close(at.done)
			at.ip, at.err = inject.Attach(pid)
		}(fp.PID)
	}
	return err
}

func (a *attachingFreezer) process(pid int) (*inject.Process, error) {
	a.mu.Lock()
	var at *attachment
	for t, x := range a.attaches {
		if t.PID == pid {
			at = x
		}
	}
	a.mu.Unlock()
	if at == nil {
		return nil, inject.ErrNoProcess
	}
	<-at.done
	return at.ip, at.err
}

// Thaw lets go of every process still attached (the movers have let go of theirs),
// then thaws them.
func (a *attachingFreezer) Thaw() error {
	a.mu.Lock()
	var errs []error
	for _, at := range a.attaches {
		<-at.done
		if at.ip != nil {
			if err := at.ip.Detach(); err != nil && !errors.Is(err, inject.ErrExited) {
				errs = append(errs, err)
			}
		}
	}
	a.mu.Unlock()
	return errors.Join(append(errs, a.Freezer.Thaw())...)
}

func (f *PtraceFreezer) process(pid int) (*inject.Process, error) {
	if ip := f.Process(pid); ip != nil {
		return ip, nil
	}
	return nil, inject.ErrNoProcess
}
