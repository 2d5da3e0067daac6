package cutover

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Freezer stops processes so that nothing of theirs changes while the cutover swaps their
// files, and resumes them afterwards. SignalFreezer (SIGSTOP) is one; a ptrace-based one,
// invisible to the parent, can take its place.
type Freezer interface {
	// Freeze stops every thread of each target and returns once all are stopped. Targets
	// this Freezer already holds are skipped, so Freeze may be called again as the set
	// grows; a target that has exited is skipped. On error, what was stopped stays
	// stopped and listed by Frozen: call Thaw.
	Freeze(ctx context.Context, targets []Target) error
	// Check reports, as a *FreezeError, a process that runs again although it should be
	// frozen (someone else resumed it): the swap must not go on.
	Check() error
	// Thaw resumes every process this Freezer stopped, and only those: one found
	// already stopped stays stopped. Thawing twice does nothing the second time.
	Thaw() error
	// Frozen reports, in the order of freezing, what Freeze did to each process.
	Frozen() []FrozenProcess
}

// FrozenProcess is what a Freezer did to one process, with the times that make its pause.
type FrozenProcess struct {
	Target
	// AlreadyStopped: it was stopped (job control, a debugger) before the freeze, so it is
	// left stopped at thaw.
	AlreadyStopped bool      `json:"already_stopped,omitempty"`
	Exited         bool      `json:"exited,omitempty"` // exited while frozen or before it could be
	SignaledAt     time.Time `json:"signaled_at"`      // the pause begins
	StoppedAt      time.Time `json:"stopped_at"`       // every thread seen stopped
	ResumedAt      time.Time `json:"resumed_at"`       // the pause ends (zero until thawed)
}

// Protector is told of a process just before it is stopped, so that it can resume it
// should livemig die before thawing it: the Guardian.
type Protector interface {
	Protect(Target) error
}

// ErrStopTimeout: a thread did not reach the stopped state in time (stuck in
// uninterruptible sleep, e.g. on a hung NFS server, or held by a debugger).
var ErrStopTimeout = errors.New("threads did not stop in time")

// ErrResumedExternally: a frozen process was seen running again (a SIGCONT from a shell
// or supervisor).
var ErrResumedExternally = errors.New("resumed by someone else while frozen")

// ErrUnsettled: new processes kept appearing under SRC round after round of freezing.
var ErrUnsettled = errors.New("new processes keep appearing under the source")

// FreezeError is a failure to freeze or thaw one process.
type FreezeError struct {
	PID   int
	TID   int  // the thread at fault, when one is
	State byte // its state in /proc when the error was seen, when known
	Err   error
}

func (e *FreezeError) Error() string {
	if e.TID != 0 && e.State != 0 {
		return fmt.Sprintf("pid %d: thread %d in state %c: %v", e.PID, e.TID, e.State, e.Err)
	}
	return fmt.Sprintf("pid %d: %v", e.PID, e.Err)
}

func (e *FreezeError) Unwrap() error { return e.Err }

// SignalFreezer freezes with SIGSTOP and thaws with SIGCONT, as the manual recipes do.
// The parent of a stopped process sees it stop (SIGCHLD, a shell's "Stopped").
// Signals go through pidfds, so a pid reused meanwhile is never hit.
type SignalFreezer struct {
	// Protector, if set, is told of each process before it is stopped.
	Protector Protector
	// StopTimeout bounds the wait for one Freeze call's processes to stop; 0 means 5 s.
	StopTimeout time.Duration

	mu    sync.Mutex
	procs map[int]*signalFrozen
	order []int
}

type signalFrozen struct {
	FrozenProcess
	pidfd   int // -1 once closed
	thawed  bool
	pending bool
}

// NewSignalFreezer returns a SIGSTOP freezer that tells p (may be nil) before each stop.
func NewSignalFreezer(p Protector) *SignalFreezer {
	return &SignalFreezer{Protector: p}
}

func (f *SignalFreezer) Freeze(ctx context.Context, targets []Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.procs == nil {
		f.procs = map[int]*signalFrozen{}
	}
	var signaled []*signalFrozen
	for _, t := range targets {
		if prev, ok := f.procs[t.PID]; ok && prev.StartTime == t.StartTime {
			continue
		}
		p, err := f.stop(t)
		if err != nil {
			return err
		}
		if p == nil {
			continue
		}
		f.procs[t.PID] = p
		f.order = append(f.order, t.PID)
		if p.pending {
			signaled = append(signaled, p)
		}
	}
	return f.waitStopped(ctx, signaled)
}

// stop sends SIGSTOP to t, or records it as already stopped; nil if t has exited.
func (f *SignalFreezer) stop(t Target) (*signalFrozen, error) {
	pidfd, err := unix.PidfdOpen(t.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, nil
	}
	if err != nil {
		return nil, &FreezeError{PID: t.PID, Err: fmt.Errorf("pidfd_open: %w", err)}
	}
	// The pidfd is the process now holding the pid; its start time says whether that is
	// still the one discovered.
	st, err := readProcStat("/proc/" + strconv.Itoa(t.PID) + "/stat")
	if gone(err) || err == nil && st.StartTime != t.StartTime {
		unix.Close(pidfd)
		return nil, nil
	}
	if err != nil {
		unix.Close(pidfd)
		return nil, &FreezeError{PID: t.PID, Err: err}
	}
	p := &signalFrozen{FrozenProcess: FrozenProcess{Target: t}, pidfd: pidfd}
	if isStopped(st.State) {
		// Stopped by job control or a debugger: its owner decides when it runs again.
		p.AlreadyStopped = true
		return p, nil
	}
	if f.Protector != nil {
		if err := f.Protector.Protect(t); err != nil {
			unix.Close(pidfd)
			return nil, &FreezeError{PID: t.PID, Err: fmt.Errorf("guardian: %w", err)}
		}
	}
	p.SignaledAt = time.Now()
	if err := unix.PidfdSendSignal(pidfd, unix.SIGSTOP, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			p.Exited = true
			return p, nil
		}
		unix.Close(pidfd)
		return nil, &FreezeError{PID: t.PID, Err: fmt.Errorf("SIGSTOP: %w", err)}
	}
	p.pending = true
	return p, nil
}

// waitStopped polls /proc until every thread of each process is stopped. Group stop is
// asynchronous: kill returns before the threads reach it, and a thread in a system call
// only stops on its way back to user space.
func (f *SignalFreezer) waitStopped(ctx context.Context, procs []*signalFrozen) error {
	timeout := f.StopTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for polls := 0; ; polls++ {
		waiting := procs[:0]
		var last *FreezeError
		for _, p := range procs {
			tid, state, err := runningThread(p.PID)
			switch {
			case gone(err):
				p.Exited, p.pending = true, false
			case err != nil:
				return &FreezeError{PID: p.PID, Err: err}
			case tid == 0:
				p.StoppedAt, p.pending = time.Now(), false
			default:
				last = &FreezeError{PID: p.PID, TID: tid, State: state, Err: ErrStopTimeout}
				waiting = append(waiting, p)
			}
		}
		procs = waiting
		if len(procs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return last
		}
		if err := ctx.Err(); err != nil {
			return &FreezeError{PID: procs[0].PID, Err: err}
		}
		// Most processes stop within microseconds; spin briefly before sleeping so
		// that the pause is not padded by the poll interval.
		if polls < 50 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond) // the pause waits on this: keep it short
		}
	}
}

// isStopped: 'T' is a group stop (SIGSTOP), 't' a ptrace stop; neither runs code.
func isStopped(state byte) bool { return state == 'T' || state == 't' }

// runningThread returns a thread of pid that is not stopped (0 if all are), with its
// state. A zombie or dead thread counts as stopped: it runs nothing.
func runningThread(pid int) (tid int, state byte, err error) {
	tids, err := listTasks(pid)
	if err != nil {
		return 0, 0, err
	}
	for _, tid := range tids {
		st, err := readProcStat("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
		if gone(err) {
			continue // the thread exited
		}
		if err != nil {
			return 0, 0, err
		}
		if !isStopped(st.State) && st.State != 'Z' && st.State != 'X' {
			return tid, st.State, nil
		}
	}
	return 0, 0, nil
}

func (f *SignalFreezer) Check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, pid := range f.order {
		p := f.procs[pid]
		if p.Exited || p.thawed || p.pidfd < 0 {
			continue
		}
		tid, state, err := runningThread(pid)
		if gone(err) {
			continue
		}
		if err != nil {
			return &FreezeError{PID: pid, Err: err}
		}
		if tid != 0 {
			return &FreezeError{PID: pid, TID: tid, State: state, Err: ErrResumedExternally}
		}
	}
	return nil
}

func (f *SignalFreezer) Thaw() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, pid := range f.order {
		p := f.procs[pid]
		if p.thawed {
			continue
		}
		p.thawed = true
		if !p.AlreadyStopped && !p.Exited {
			// Stamped before the signal: the process cannot run before this instant,
			// while it may well run before a stamp taken after the call.
			resumed := time.Now()
			err := unix.PidfdSendSignal(p.pidfd, unix.SIGCONT, nil, 0)
			p.ResumedAt = resumed
			if errors.Is(err, unix.ESRCH) {
				p.Exited = true
			} else if err != nil {
				errs = append(errs, &FreezeError{PID: pid, Err: fmt.Errorf("SIGCONT: %w", err)})
			}
		}
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	return errors.Join(errs...)
}

func (f *SignalFreezer) Frozen() []FrozenProcess {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FrozenProcess, 0, len(f.order))
	for _, pid := range f.order {
		out = append(out, f.procs[pid].FrozenProcess)
	}
	return out
}

// maxFreezeRounds bounds FreezeUsers: each round freezes what the previous one found
// new, which only a process outside the frozen set (a parent forking again and again)
// can keep supplying.
const maxFreezeRounds = 16

// FreezeUsers discovers the processes that use src, freezes them with f, and discovers
// again until a pass finds no process that is not frozen yet (a child forked while its
// parent was being stopped). The Discovery returned was taken with every process in it
// frozen, so it stays true until thaw. On error, call f.Thaw.
//
// The passes after the first run inside the pause, so they only look at what can have
// changed that matters: the frozen processes, and processes the previous pass did not
// see. A process that was running, not using src, and opens something under it after
// the first pass is not caught; nothing short of freezing every process could.
func FreezeUsers(ctx context.Context, src string, opts Options, f Freezer) (*Discovery, error) {
	s, err := ResolveSource(src)
	if err != nil {
		return nil, err
	}
	d, nonUsers, err := discover(s, opts, true, nil)
	if err != nil {
		return nil, err
	}
	frozen := map[Target]bool{}
	for round := 0; round < maxFreezeRounds; round++ {
		var fresh []Target
		for _, t := range d.Targets() {
			if !frozen[t] {
				fresh = append(fresh, t)
			}
		}
		if len(fresh) == 0 {
			return d, nil
		}
		if err := f.Freeze(ctx, fresh); err != nil {
			return nil, fmt.Errorf("freeze: %w", err)
		}
		for _, t := range fresh {
			frozen[t] = true
		}
		// The frozen processes are scanned again: they may have changed files between
		// their discovery and their stop.
		if d, nonUsers, err = discover(s, opts, false, nonUsers); err != nil {
			return nil, err
		}
	}
	return nil, ErrUnsettled
}
