package inject

import "golang.org/x/sys/unix"

// stopInterrupted are the syscalls that fail with EINTR, instead of restarting, when their
// thread is merely stopped — by a stop signal or by our PTRACE_INTERRUPT alike (signal(7),
// "Interruption of system calls and library functions by stop signals"). epoll_wait is the
// common one. Socket calls are listed for their SO_RCVTIMEO/SO_SNDTIMEO variant.
var stopInterrupted = func() map[uintptr]bool {
	m := map[uintptr]bool{}
	for _, nr := range append([]uintptr{
		unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_PWAIT2, unix.SYS_SEMOP, unix.SYS_SEMTIMEDOP,
		unix.SYS_RT_SIGTIMEDWAIT, unix.SYS_IO_GETEVENTS, unix.SYS_IO_PGETEVENTS,
		unix.SYS_RECVFROM, unix.SYS_RECVMSG, unix.SYS_RECVMMSG, unix.SYS_SENDTO,
		unix.SYS_SENDMSG, unix.SYS_ACCEPT, unix.SYS_ACCEPT4,
	}, archStopInterrupted...) {
		m[nr] = true
	}
	return m
}()

// undoStopInterruption turns the EINTR that our stop caused in one of stopInterrupted into
// -ERESTARTNOHAND, which the kernel handles as it leaves the stop: the call is restarted,
// unless a signal handler runs at that moment — then the program gets its EINTR, exactly
// as it would have without us. It reports whether r changed.
func undoStopInterruption(r *regs) bool {
	nr, ok := r.interruptedBy()
	if !ok || !stopInterrupted[nr] {
		return false
	}
	r.setSyscallResult(-errRestartNoHand)
	return true
}
