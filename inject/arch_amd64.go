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

// batchSupported: encodeBatch generates code for this architecture.
const batchSupported = true

// encodeBatch generates x86-64 code that runs calls in order, stores each result in the
// 8-byte slot results+8*i, stops after the first that fails (result in [-4095, -1]), and
// ends with int3. r11 holds addresses: the syscall instruction clobbers it anyway.
func encodeBatch(calls []Call, results uintptr) []byte {
	var c []byte
	imm64 := func(v uintptr) {
		for i := 0; i < 8; i++ {
			c = append(c, byte(uint64(v)>>(8*i)))
		}
	}
	// Argument registers rdi, rsi, rdx, r10, r8, r9: "mov reg, imm64" and "mov reg, [r11]".
	movImm := [6][]byte{{0x48, 0xbf}, {0x48, 0xbe}, {0x48, 0xba}, {0x49, 0xba}, {0x49, 0xb8}, {0x49, 0xb9}}
	movLoad := [6][]byte{{0x49, 0x8b, 0x3b}, {0x49, 0x8b, 0x33}, {0x49, 0x8b, 0x13}, {0x4d, 0x8b, 0x13}, {0x4d, 0x8b, 0x03}, {0x4d, 0x8b, 0x0b}}
	var exits []int // offsets of the rel32 of each "jae end"
	for i, call := range calls {
		for j, a := range call.Args {
			if a.from >= 0 {
				c = append(c, 0x49, 0xbb) // mov r11, imm64
				imm64(results + uintptr(8*a.from))
				c = append(c, movLoad[j]...)
			} else {
				c = append(c, movImm[j]...)
				imm64(a.v)
			}
		}
		c = append(c, 0x48, 0xb8) // mov rax, nr
		imm64(call.Nr)
		c = append(c, 0x0f, 0x05)                         // syscall
		c = append(c, 0x49, 0xbb)                         // mov r11, &results[i]
		imm64(results + uintptr(8*i))                     //
		c = append(c, 0x49, 0x89, 0x03)                   // mov [r11], rax
		c = append(c, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff) // cmp rax, -4095
		c = append(c, 0x0f, 0x83, 0, 0, 0, 0)             // jae end
		exits = append(exits, len(c)-4)
	}
	end := len(c)
	for _, at := range exits {
		rel := uint32(end - (at + 4))
		c[at], c[at+1], c[at+2], c[at+3] = byte(rel), byte(rel>>8), byte(rel>>16), byte(rel>>24)
	}
	return append(c, 0xcc) // int3
}
