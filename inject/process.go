package inject

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// How long the kernel may take to stop the threads at attach. A thread in uninterruptible
// sleep (D) stops only when it leaves it.
var attachTimeout = 2 * time.Second

// Process is a process under our control: every thread stopped until Detach.
// It is not safe for concurrent use.
type Process struct {
	pid     int
	tr      *tracer
	threads map[int]*thread
	worker  *thread // the thread syscalls run in
	insn    uintptr // address of a syscall instruction in the process's own code
	region  region  // what we mapped in the process: code page, then scratch memory
	scratch scratch
	code    uintptr // our executable page for batches (see batch)
	// noCodePage: the process may not map a writable executable page; batches step.
	noCodePage bool
	colocated  bool // colocate has run
	exited     bool
	detached   bool
}

type thread struct {
	tid     int
	saved   regs // as found at attach; put back at detach
	hasRegs bool
	changed bool // the kernel's copy of the registers differs from saved
	gone    bool // exited while attached
	// Signals that arrived while we held the thread. They are delivered again at detach,
	// so that attaching never loses or invents a signal.
	deferred []unix.Siginfo
	// affinity is the thread's own CPU set while colocate has pinned it; put back at detach.
	affinity *unix.CPUSet
}

// Attach stops every thread of the process pid (threads created meanwhile included) with
// PTRACE_SEIZE + PTRACE_INTERRUPT, which neither the process nor its parent can observe:
// no SIGSTOP, no SIGCHLD. It refuses livemig itself, init, kernel threads and a process
// that another tracer holds. If pid names a thread, its whole process is attached.
func Attach(pid int) (*Process, error) {
	tgid, err := checkAttachable(pid)
	if err != nil {
		return nil, fmt.Errorf("attach pid %d: %w", pid, err)
	}
	p := &Process{pid: tgid, tr: newTracer(), threads: map[int]*thread{}}
	if err := p.tr.do(p.attachAll); err != nil {
		_ = p.tr.do(p.detachAll)
		p.tr.close()
		p.detached = true
		return nil, fmt.Errorf("attach pid %d: %w", pid, err)
	}
	return p, nil
}

func checkAttachable(pid int) (tgid int, err error) {
	if pid <= 0 {
		return 0, fmt.Errorf("invalid pid: %w", ErrNoProcess)
	}
	info, err := readProcInfo(pid)
	if err != nil {
		return 0, err
	}
	switch {
	case info.tgid == os.Getpid():
		return 0, fmt.Errorf("%w: it is livemig itself", ErrRefused)
	case info.tgid == 1:
		return 0, fmt.Errorf("%w: it is init (pid 1)", ErrRefused)
	case info.flags&pfKthread != 0:
		return 0, fmt.Errorf("%w: it is a kernel thread", ErrRefused)
	case info.state == 'Z' || info.state == 'X':
		return 0, fmt.Errorf("it is a zombie: %w", ErrNoProcess)
	case info.tracerPid != 0:
		return 0, &TracedError{Pid: pid, TracerPid: info.tracerPid}
	}
	return info.tgid, nil
}

// Pid is the process id (thread group id) attached to.
func (p *Process) Pid() int { return p.pid }

// Threads lists the thread ids held stopped.
func (p *Process) Threads() []int {
	var tids []int
	for tid, t := range p.threads {
		if !t.gone {
			tids = append(tids, tid)
		}
	}
	return tids
}

// attachAll seizes and stops threads until a listing of /proc/PID/task shows none new: a
// stopped thread cannot create threads, so the loop ends once all known ones are stopped.
func (p *Process) attachAll() error {
	deadline := time.Now().Add(attachTimeout)
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("threads kept appearing for %v", attachTimeout)
		}
		tids, err := listThreads(p.pid)
		if err != nil {
			return err
		}
		var fresh []int
		for _, tid := range tids {
			if _, known := p.threads[tid]; known {
				continue
			}
			t := &thread{tid: tid}
			if err := unix.PtraceSeize(tid); err != nil {
				if err == unix.ESRCH || exiting(tid) {
					continue // exited meanwhile, or exiting (EPERM): nothing to stop
				}
				if info, ierr := readProcInfo(tid); ierr == nil && info.tracerPid != 0 && info.tracerPid != p.tr.tid {
					return &TracedError{Pid: p.pid, TracerPid: info.tracerPid}
				}
				return fmt.Errorf("seize thread %d: %w", tid, err)
			}
			p.threads[tid] = t
			if err := unix.PtraceInterrupt(tid); err != nil {
				if err == unix.ESRCH {
					t.gone = true
					continue
				}
				return fmt.Errorf("interrupt thread %d: %w", tid, err)
			}
			fresh = append(fresh, tid)
		}
		if len(fresh) == 0 {
			break
		}
		if err := p.waitStopped(fresh, deadline); err != nil {
			return err
		}
	}
	p.worker = p.threads[p.pid]
	if p.worker == nil || p.worker.gone {
		p.worker = nil
		for _, t := range p.threads {
			if !t.gone && (p.worker == nil || t.tid < p.worker.tid) {
				p.worker = t
			}
		}
	}
	if p.worker == nil {
		return ErrExited
	}
	return p.loadRegs(p.worker)
}

// colocate pins the worker thread and the tracer thread to one CPU for the rest of the
// session, before the first injected call (an attach that injects nothing pays nothing). Each
// injected call hands the CPU from one to the other and back; on two CPUs each handoff
// wakes an idle CPU, which on a virtual machine costs tens of microseconds, on one it is
// a context switch (getpid injected: ~60-70 µs -> ~20 µs here). The worker's own CPU set
// is put back at Detach. Where either cannot be pinned (a cpuset), nothing is.
func (p *Process) colocate() {
	if p.colocated {
		return
	}
	p.colocated = true
	w := p.worker
	var own unix.CPUSet
	if unix.SchedGetaffinity(w.tid, &own) != nil {
		return
	}
	cpu := -1
	if info, err := readProcInfo(w.tid); err == nil && own.IsSet(info.cpu) {
		cpu = info.cpu
	}
	for c := 0; cpu < 0 && c < 1024; c++ {
		if own.IsSet(c) {
			cpu = c
		}
	}
	var one unix.CPUSet
	one.Set(cpu)
	if cpu < 0 || unix.SchedSetaffinity(0, &one) != nil { // the tracer thread: ours, it ends with the session
		return
	}
	if unix.SchedSetaffinity(w.tid, &one) == nil {
		w.affinity = &own
	}
}

// waitStopped waits until each of tids has reported a stop (or exited).
func (p *Process) waitStopped(tids []int, deadline time.Time) error {
	pending := map[int]bool{}
	for _, tid := range tids {
		pending[tid] = true
	}
	var pause pacer
	for len(pending) > 0 {
		for tid := range pending {
			t := p.threads[tid]
			s, ok, err := pollStop(tid)
			switch {
			case err != nil:
				t.gone = true
			case ok:
				if s.event == 0 {
					p.deferSignal(t)
				}
			case pause.slow() && exiting(tid):
				t.gone = true
			default:
				continue
			}
			delete(pending, tid)
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var states []string
			for tid := range pending {
				states = append(states, fmt.Sprintf("thread %d in state %c", tid, threadState(tid)))
			}
			return fmt.Errorf("threads did not stop within %v: %s", attachTimeout, strings.Join(states, ", "))
		}
		pause.wait()
	}
	return nil
}

// deferSignal records the signal of a signal-delivery-stop; the thread will be resumed
// with none, and Detach delivers it again.
func (p *Process) deferSignal(t *thread) {
	var info unix.Siginfo
	if err := ptraceGetSiginfo(t.tid, &info); err == nil {
		t.deferred = append(t.deferred, info)
	}
}

func (p *Process) loadRegs(t *thread) error {
	if t.hasRegs {
		return nil
	}
	if err := getRegs(t.tid, &t.saved); err != nil {
		return p.lost(t, "read registers", err)
	}
	t.hasRegs = true
	return nil
}

// lost names a failed ptrace request. A thread we hold stopped can only stop being
// traceable (ESRCH) when its process is being killed, so that is ErrExited.
func (p *Process) lost(t *thread, what string, err error) error {
	if err == unix.ESRCH {
		t.gone, p.exited = true, true
		return fmt.Errorf("%s of thread %d: %w", what, t.tid, ErrExited)
	}
	return fmt.Errorf("%s of thread %d: %w", what, t.tid, err)
}

// waitThread blocks until t stops again. The kernel cannot report the exit of a killed
// process's leader while its other threads are ours and unreaped, so while waiting, a
// watchdog looks every few milliseconds whether the process is exiting and, if so, reaps
// those threads (any thread of the tracer's process may), which lets the exit through.
func (p *Process) waitThread(t *thread) (stop, error) {
	var others []int
	for _, o := range p.threads {
		if o != t && !o.gone {
			others = append(others, o.tid)
		}
	}
	if len(others) > 0 {
		var done atomic.Bool
		var watchdog *time.Timer
		watchdog = time.AfterFunc(watchdogPeriod, func() {
			if done.Load() {
				return
			}
			if !exiting(p.pid) {
				watchdog.Reset(watchdogPeriod)
				return
			}
			for _, tid := range others {
				var info unix.Siginfo
				_ = unix.Waitid(unix.P_PID, tid, &info, unix.WEXITED|unix.WNOHANG|unix.WALL, nil)
			}
		})
		defer func() { done.Store(true); watchdog.Stop() }()
	}
	s, exited, err := waitStop(t.tid)
	if err != nil || exited {
		t.gone, p.exited = true, true
		return s, fmt.Errorf("thread %d: %w", t.tid, ErrExited)
	}
	return s, nil
}

const watchdogPeriod = 20 * time.Millisecond

// pfExiting is PF_EXITING in the flags field of /proc/PID/stat: set as soon as a thread
// starts to exit, before its memory map and state letter change.
const pfExiting = 0x4

// exiting tells that a thread has exited or is exiting (killed, say).
func exiting(tid int) bool {
	info, err := readProcInfo(tid)
	return err != nil || info.state == 'Z' || info.state == 'X' || info.flags&pfExiting != 0
}

// Detach puts back every register that was changed, delivers the signals that arrived
// while attached, removes the scratch mapping and lets every thread go on with what it was
// doing. A process that was stopped (SIGSTOP) before Attach is still stopped after Detach:
// the kernel puts a detached thread back into a group stop that is still in effect.
// Detach is idempotent.
func (p *Process) Detach() error {
	if p.detached {
		return nil
	}
	p.detached = true
	err := p.tr.do(p.detachAll)
	p.tr.close()
	if err != nil {
		return fmt.Errorf("detach pid %d: %w", p.pid, err)
	}
	return nil
}

func (p *Process) detachAll() error {
	var errs []error
	if p.region.addr != 0 && !p.exited {
		if err := p.unmapMemory(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range p.threads {
		if t.gone {
			continue
		}
		if !t.hasRegs && getRegs(t.tid, &t.saved) == nil {
			t.hasRegs = true
		}
		if t.hasRegs && undoStopInterruption(&t.saved) {
			t.changed = true
		}
		if t.affinity != nil {
			if err := unix.SchedSetaffinity(t.tid, t.affinity); err != nil && err != unix.ESRCH {
				errs = append(errs, fmt.Errorf("restore CPU affinity of thread %d: %w", t.tid, err))
			}
		}
		if t.changed {
			if err := setRegs(t.tid, &t.saved); err != nil && err != unix.ESRCH {
				errs = append(errs, fmt.Errorf("restore registers of thread %d: %w", t.tid, err))
			}
		}
		var err error
		if len(t.deferred) > 0 {
			// Every thread with a deferred signal sits in a signal-delivery-stop, where a
			// detach with that signal delivers it with its original siginfo.
			first := t.deferred[0]
			if err = ptraceSetSiginfo(t.tid, &first); err == nil {
				err = ptraceDetachSignal(t.tid, unix.Signal(first.Signo))
			}
			// A second signal in the same few milliseconds is rare; it is sent again
			// with tgkill, which keeps the signal but not its original sender.
			for _, info := range t.deferred[1:] {
				_ = unix.Tgkill(p.pid, t.tid, unix.Signal(info.Signo))
			}
		} else {
			err = unix.PtraceDetach(t.tid)
		}
		if err != nil && err != unix.ESRCH {
			errs = append(errs, fmt.Errorf("detach thread %d: %w", t.tid, err))
		}
	}
	return errors.Join(errs...)
}

// threadState is the state letter of a thread ('?' when it is gone).
func threadState(tid int) byte {
	info, err := readProcInfo(tid)
	if err != nil {
		return '?'
	}
	return info.state
}

// pacer paces a polling loop: it spins first (a ptrace stop usually arrives within
// microseconds), then sleeps with growing pauses up to a millisecond.
type pacer struct{ n int }

const pacerSpins = 200

func (w *pacer) slow() bool { return w.n > pacerSpins }

func (w *pacer) wait() {
	w.n++
	if w.n <= pacerSpins {
		return
	}
	d := time.Duration(w.n-pacerSpins) * 20 * time.Microsecond
	if d > time.Millisecond {
		d = time.Millisecond
	}
	time.Sleep(d)
}
