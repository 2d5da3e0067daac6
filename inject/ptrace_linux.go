package inject

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ptrace requests below have no wrapper in x/sys (it offers PtraceDetach without a
// signal, and no siginfo requests).

func ptraceGetSiginfo(tid int, info *unix.Siginfo) error {
	return ptraceRaw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(info)))
}

func ptraceSetSiginfo(tid int, info *unix.Siginfo) error {
	return ptraceRaw(unix.PTRACE_SETSIGINFO, tid, 0, uintptr(unsafe.Pointer(info)))
}

// ptraceDetachSignal detaches and, from a signal-delivery-stop, delivers sig.
func ptraceDetachSignal(tid int, sig unix.Signal) error {
	return ptraceRaw(unix.PTRACE_DETACH, tid, 0, uintptr(sig))
}

func ptraceRaw(req int, tid int, addr, data uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// stop is what one ptrace stop of a thread reports.
type stop struct {
	sig   unix.Signal
	event int // PTRACE_EVENT_*; 0 for a signal-delivery-stop
}

// childInfo is the SIGCHLD view of the siginfo that waitid fills in.
type childInfo struct {
	signo, errno, code, _ int32
	pid                   int32
	uid                   uint32
	status                int32 // for a ptrace stop: signal | event<<8
}

// si_code values of an exit in a waitid result (CLD_EXITED, CLD_KILLED, CLD_DUMPED; x/sys
// has no constants for them).
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// waitStop blocks until tid stops or exits, and collects the stop. An exit is only
// reported (exited), never collected: the parent of the process, which may be livemig
// itself, must still be able to wait for it.
func waitStop(tid int) (s stop, exited bool, err error) {
	for {
		var info unix.Siginfo
		err = unix.Waitid(unix.P_PID, tid, &info, unix.WSTOPPED|unix.WEXITED|unix.WNOWAIT|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return s, false, err
		}
		switch (*childInfo)(unsafe.Pointer(&info)).code {
		case cldExited, cldKilled, cldDumped:
			return s, true, nil
		}
		var ok bool
		if s, ok, err = pollStop(tid); ok || err != nil {
			return s, false, err
		}
	}
}

// pollStop collects a ptrace stop of tid if one is pending, without blocking. It never
// collects an exit: the parent of the process, which may be livemig itself, must still
// be able to wait for it.
func pollStop(tid int) (s stop, ok bool, err error) {
	var info unix.Siginfo
	for {
		err = unix.Waitid(unix.P_PID, tid, &info, unix.WSTOPPED|unix.WNOHANG|unix.WALL, nil)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return s, false, err
	}
	ci := (*childInfo)(unsafe.Pointer(&info))
	if int(ci.pid) != tid {
		return s, false, nil
	}
	return stop{sig: unix.Signal(ci.status & 0xff), event: int(ci.status>>8) & 0xff}, true, nil
}
