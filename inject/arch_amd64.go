package inject

import "golang.org/x/sys/unix"

// syscallInsn is `syscall`; Attach looks for these bytes in the process's own code (the
// vDSO first) and jumps there, so that no byte of the process is ever overwritten.
var syscallInsn = []byte{0x0f, 0x05}

const syscallInsnAlign = 1

// regs is the register state Attach saves and Detach puts back.
type regs struct{ unix.PtraceRegs }

func getRegs(tid int, r *regs) error { return unix.PtraceGetRegs(tid, &r.PtraceRegs) }
func setRegs(tid int, r *regs) error { return unix.PtraceSetRegs(tid, &r.PtraceRegs) }

func (r *regs) pc() uintptr { return uintptr(r.Rip) }

// prepareSyscall points the registers at the syscall instruction with nr and args loaded.
// orig_rax = -1 tells the kernel that the thread is not inside a syscall, so that the
// restart logic of an interrupted call (read, nanosleep, ...) cannot rewrite our registers.
func (r *regs) prepareSyscall(insn uintptr, nr uintptr, args [6]uintptr) {
	r.Rip = uint64(insn)
	r.Rax = uint64(nr)
	r.Orig_rax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx = uint64(args[0]), uint64(args[1]), uint64(args[2])
	r.R10, r.R8, r.R9 = uint64(args[3]), uint64(args[4]), uint64(args[5])
}

func (r *regs) syscallResult() uintptr { return uintptr(r.Rax) }

// interruptedBy returns the syscall the thread was leaving with EINTR, if any.
func (r *regs) interruptedBy() (nr uintptr, ok bool) {
	if int64(r.Orig_rax) >= 0 && int64(r.Rax) == -int64(unix.EINTR) {
		return uintptr(r.Orig_rax), true
	}
	return 0, false
}

func (r *regs) setSyscallResult(v int64) { r.Rax = uint64(v) }

// archStopInterrupted adds the syscalls only this architecture has to stopInterrupted.
var archStopInterrupted = []uintptr{unix.SYS_EPOLL_WAIT}
