package inject

import (
	"errors"
	"fmt"
)

// Errors a caller may need to tell apart; they come wrapped with the pid and the step.
var (
	// ErrNoProcess: there is no such process (or it is a zombie).
	ErrNoProcess = errors.New("no such process")
	// ErrExited: the process exited while attached, possibly in the middle of a call.
	ErrExited = errors.New("process exited")
	// ErrRefused: the target may never be attached to (livemig itself, init, a kernel thread).
	ErrRefused = errors.New("refused")
	// ErrDetached: the Process was used after Detach.
	ErrDetached = errors.New("already detached")
)

// TracedError says that another tracer (a debugger, strace, another livemig) holds the
// process; only one tracer may attach at a time.
type TracedError struct {
	Pid       int
	TracerPid int
}

func (e *TracedError) Error() string {
	return fmt.Sprintf("pid %d is already traced by pid %d (TracerPid in /proc/%d/status)", e.Pid, e.TracerPid, e.Pid)
}

// SyscallError is the errno an injected syscall returned inside the process.
type SyscallError struct {
	Name  string
	Errno error // a syscall.Errno
}

func (e *SyscallError) Error() string { return fmt.Sprintf("%s in target: %v", e.Name, e.Errno) }
func (e *SyscallError) Unwrap() error { return e.Errno }
