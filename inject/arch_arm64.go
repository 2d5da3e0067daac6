package inject

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// syscallInsn is `svc #0`; Attach looks for it in the process's own code (the vDSO
// first) and jumps there, so that no byte of the process is ever overwritten.
var syscallInsn = []byte{0x01, 0x00, 0x00, 0xd4}

const syscallInsnAlign = 4

// ntArmSystemCall is NT_ARM_SYSTEM_CALL, the regset holding the syscall number the
// kernel's restart logic reads (x/sys has no constant or wrapper for it).
const ntArmSystemCall = 0x404

// regs is the register state Attach saves and Detach puts back: the general registers
// and the in-kernel syscall number, which arm64 keeps outside them.
type regs struct {
	gp        unix.PtraceRegsArm64
	syscallNo int32
}

func getRegs(tid int, r *regs) error {
	if err := unix.PtraceGetRegSetArm64(tid, unix.NT_PRSTATUS, &r.gp); err != nil {
		return err
	}
	return syscallNoRegset(unix.PTRACE_GETREGSET, tid, &r.syscallNo)
}

func setRegs(tid int, r *regs) error {
	if err := unix.PtraceSetRegSetArm64(tid, unix.NT_PRSTATUS, &r.gp); err != nil {
		return err
	}
	return syscallNoRegset(unix.PTRACE_SETREGSET, tid, &r.syscallNo)
}

func syscallNoRegset(req int, tid int, no *int32) error {
	iov := unix.Iovec{Base: (*byte)(unsafe.Pointer(no))}
	iov.SetLen(int(unsafe.Sizeof(*no)))
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), ntArmSystemCall, uintptr(unsafe.Pointer(&iov)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func (r *regs) pc() uintptr { return uintptr(r.gp.Pc) }

// prepareSyscall points the registers at the syscall instruction with nr and args loaded.
// A syscall number of -1 keeps the kernel's restart logic away from our registers.
func (r *regs) prepareSyscall(insn uintptr, nr uintptr, args [6]uintptr) {
	r.gp.Pc = uint64(insn)
	r.gp.Regs[8] = uint64(nr)
	for i, a := range args {
		r.gp.Regs[i] = uint64(a)
	}
	r.syscallNo = -1
}

func (r *regs) syscallResult() uintptr { return uintptr(r.gp.Regs[0]) }

// interruptedBy returns the syscall the thread was leaving with EINTR, if any.
func (r *regs) interruptedBy() (nr uintptr, ok bool) {
	if r.syscallNo >= 0 && int64(r.gp.Regs[0]) == -int64(unix.EINTR) {
		return uintptr(r.syscallNo), true
	}
	return 0, false
}

func (r *regs) setSyscallResult(v int64) { r.gp.Regs[0] = uint64(v) }

// archStopInterrupted adds the syscalls only this architecture has to stopInterrupted.
var archStopInterrupted []uintptr

// batchSupported: no code generator for arm64 yet; batches run call by call.
const batchSupported = false

func encodeBatch(calls []Call, results uintptr) []byte { return nil }
