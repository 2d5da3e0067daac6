package inject

import (
	"bytes"
	"fmt"

	"golang.org/x/sys/unix"
)

// Kernel-internal restart codes: an injected call interrupted by a signal returns one of
// these, and has had no effect, so it is simply run again.
const (
	errRestartSys         = 512
	errRestartNoIntr      = 513
	errRestartNoHand      = 514
	errRestartRestartBlck = 516
)

// Syscall runs the system call nr with up to six arguments inside the process, in its
// context (fd table, cwd, root, mount namespace), and returns the result or the errno as
// a *SyscallError. Pointer arguments must point into the process: see WriteScratch.
func (p *Process) Syscall(nr uintptr, args ...uintptr) (uintptr, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("syscall %d: %d arguments, at most 6", nr, len(args))
	}
	var ret uintptr
	err := p.run(func() (err error) {
		ret, err = p.call(syscallName(nr), nr, args...)
		return err
	})
	return ret, err
}

// Do runs f on the thread that traces the process. Every method of p that f calls runs
// there directly, without the thread handoff a call from another goroutine costs (tens of
// microseconds, more than the injected syscall itself): a cutover does all its work on one
// process in one Do. f must not start goroutines that use p.
func (p *Process) Do(f func() error) error {
	if p.detached {
		return fmt.Errorf("pid %d: %w", p.pid, ErrDetached)
	}
	return p.tr.do(f)
}

// run executes f on the tracer thread after checking that the process is still ours.
func (p *Process) run(f func() error) error {
	if p.detached {
		return fmt.Errorf("pid %d: %w", p.pid, ErrDetached)
	}
	return p.tr.do(func() error {
		if p.exited {
			return fmt.Errorf("pid %d: %w", p.pid, ErrExited)
		}
		return f()
	})
}

// call runs one syscall in the worker thread; errors name the call. Tracer thread only.
func (p *Process) call(name string, nr uintptr, args ...uintptr) (uintptr, error) {
	ret, err := p.rawSyscall(p.worker, nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if e := -int(ret); e > 0 && e < 4096 {
		return 0, &SyscallError{Name: name, Errno: unix.Errno(e)}
	}
	return ret, nil
}

// rawSyscall points t at the syscall instruction with nr and args loaded, single-steps
// over it and returns the raw result register. The registers the process had are kept in
// t.saved and put back at Detach, so consecutive calls cost one step each.
func (p *Process) rawSyscall(t *thread, nr uintptr, args ...uintptr) (uintptr, error) {
	if p.insn == 0 {
		if err := p.findSyscallInsn(); err != nil {
			return 0, err
		}
	}
	if err := p.loadRegs(t); err != nil {
		return 0, err
	}
	p.colocate()
	var a [6]uintptr
	copy(a[:], args)
	for attempt := 0; ; attempt++ {
		r := t.saved
		r.prepareSyscall(p.insn, nr, a)
		if err := setRegs(t.tid, &r); err != nil {
			return 0, p.lost(t, "set registers", err)
		}
		t.changed = true
		if err := p.stepOverSyscall(t); err != nil {
			return 0, err
		}
		if err := getRegs(t.tid, &r); err != nil {
			return 0, p.lost(t, "read registers", err)
		}
		ret := r.syscallResult()
		switch -int(ret) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlck:
			if attempt < 3 {
				continue
			}
		}
		return ret, nil
	}
}

// stepOverSyscall single-steps t until it stops right after the syscall instruction.
// Other stops are handled on the way: an interrupt or group stop before the instruction
// ran is stepped again; a signal that arrives is kept for Detach to deliver.
func (p *Process) stepOverSyscall(t *thread) error {
	after := p.insn + uintptr(len(syscallInsn))
	for {
		if err := unix.PtraceSingleStep(t.tid); err != nil {
			return p.lost(t, "single-step", err)
		}
		s, err := p.waitThread(t)
		if err != nil {
			return err
		}
		if s.event != 0 {
			continue
		}
		if s.sig == unix.SIGTRAP {
			var r regs
			if err := getRegs(t.tid, &r); err != nil {
				return p.lost(t, "read registers", err)
			}
			if r.pc() == after {
				return nil
			}
		}
		p.deferSignal(t)
	}
}

// findSyscallInsn finds a syscall instruction in the process's own executable memory,
// the vDSO first, so that injecting never writes to the process's code.
func (p *Process) findSyscallInsn() error {
	maps, err := readMappings(p.pid)
	if err != nil && !exiting(p.pid) {
		return fmt.Errorf("read maps of pid %d: %w", p.pid, err)
	}
	var candidates []mapping
	for _, m := range maps {
		if len(m.perms) < 3 || m.perms[2] != 'x' || m.name == "[vsyscall]" {
			continue
		}
		if m.name == "[vdso]" {
			candidates = append([]mapping{m}, candidates...)
		} else {
			candidates = append(candidates, m)
		}
	}
	const maxScan = 16 << 20
	for _, m := range candidates {
		size := m.end - m.start
		if size > maxScan {
			size = maxScan
		}
		buf := make([]byte, size)
		if err := p.readMemory(m.start, buf); err != nil {
			continue
		}
		for off := 0; ; {
			i := bytes.Index(buf[off:], syscallInsn)
			if i < 0 {
				break
			}
			addr := m.start + uintptr(off+i)
			if addr%syscallInsnAlign == 0 {
				p.insn = addr
				return nil
			}
			off += i + 1
		}
	}
	if exiting(p.pid) {
		p.exited = true
		return fmt.Errorf("pid %d: %w", p.pid, ErrExited)
	}
	return fmt.Errorf("no syscall instruction found in the executable memory of pid %d", p.pid)
}

func (p *Process) readMemory(addr uintptr, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: addr, Len: len(buf)}}
	n, err := unix.ProcessVMReadv(p.pid, local, remote, 0)
	if err != nil {
		return fmt.Errorf("read %d bytes at %#x of pid %d: %w", len(buf), addr, p.pid, err)
	}
	if n != len(buf) {
		return fmt.Errorf("read %d bytes at %#x of pid %d: short read (%d)", len(buf), addr, p.pid, n)
	}
	return nil
}

func (p *Process) writeMemory(addr uintptr, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &data[0]}}
	local[0].SetLen(len(data))
	remote := []unix.RemoteIovec{{Base: addr, Len: len(data)}}
	n, err := unix.ProcessVMWritev(p.pid, local, remote, 0)
	if err != nil {
		return fmt.Errorf("write %d bytes at %#x of pid %d: %w", len(data), addr, p.pid, err)
	}
	if n != len(data) {
		return fmt.Errorf("write %d bytes at %#x of pid %d: short write (%d)", len(data), addr, p.pid, n)
	}
	return nil
}

// ReadMemory copies len(buf) bytes at addr in the process into buf.
func (p *Process) ReadMemory(addr uintptr, buf []byte) error {
	return p.run(func() error { return p.readMemory(addr, buf) })
}

// scratch is private anonymous memory made inside the process by an injected mmap,
// filled from the start for each operation, and removed at Detach.
type scratch struct {
	addr uintptr
	used uintptr
}

const scratchSize = 1 << 20 // reserved, not touched: pages cost only when written

// WriteScratch copies data into the process's scratch memory and returns its address
// there, valid until ResetScratch or Detach. The scratch mapping is made on first use.
func (p *Process) WriteScratch(data []byte) (uintptr, error) {
	var addr uintptr
	err := p.run(func() (err error) {
		addr, err = p.putScratch(data)
		return err
	})
	return addr, err
}

// ResetScratch makes the whole scratch memory free again.
func (p *Process) ResetScratch() { p.scratch.used = 0 }

func (p *Process) putScratch(data []byte) (uintptr, error) {
	if err := p.ensureMemory(); err != nil {
		return 0, err
	}
	size := (uintptr(len(data)) + 15) &^ 15 // keep structs aligned
	if p.scratch.used+size > scratchSize {
		return 0, fmt.Errorf("scratch memory of pid %d full: %d bytes wanted, %d left", p.pid, len(data), scratchSize-p.scratch.used)
	}
	addr := p.scratch.addr + p.scratch.used
	if err := p.writeMemory(addr, data); err != nil {
		return 0, err
	}
	p.scratch.used += size
	return addr, nil
}

// putString puts a NUL-terminated copy of s into scratch memory.
func (p *Process) putString(s string) (uintptr, error) {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return p.putScratch(b)
}

// ensureMemory maps, on first need, our region in the process: an executable page for
// batches followed by the scratch memory, in one injected mmap (every round trip counts
// in the pause). Where writable code is refused (SELinux's execmem, say), the scratch
// memory alone, and batches run call by call.
func (p *Process) ensureMemory() error {
	if p.region.addr != 0 {
		return nil
	}
	if batchSupported && !p.noCodePage {
		addr, err := p.call("mmap", unix.SYS_MMAP, 0, codeSize+scratchSize,
			unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
		if err == nil {
			p.region = region{addr: addr, size: codeSize + scratchSize}
			p.code, p.scratch = addr, scratch{addr: addr + codeSize}
			return nil
		}
		p.noCodePage = true
	}
	addr, err := p.call("mmap scratch", unix.SYS_MMAP, 0, scratchSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		return err
	}
	p.region, p.scratch = region{addr: addr, size: scratchSize}, scratch{addr: addr}
	return nil
}

// region is the memory we mapped in the process.
type region struct{ addr, size uintptr }

func (p *Process) unmapMemory() error {
	_, err := p.call("munmap", unix.SYS_MUNMAP, p.region.addr, p.region.size)
	p.region, p.scratch, p.code = region{}, scratch{}, 0
	return err
}

// syscallName names the calls this package makes, for error messages.
func syscallName(nr uintptr) string {
	if n, ok := syscallNames[nr]; ok {
		return n
	}
	return fmt.Sprintf("syscall %d", nr)
}

var syscallNames = map[uintptr]string{
	unix.SYS_GETPID: "getpid", unix.SYS_OPENAT: "openat", unix.SYS_CLOSE: "close",
	unix.SYS_LSEEK: "lseek", unix.SYS_FCNTL: "fcntl", unix.SYS_DUP3: "dup3",
	unix.SYS_CHDIR: "chdir", unix.SYS_FCHDIR: "fchdir", unix.SYS_MMAP: "mmap",
	unix.SYS_MUNMAP: "munmap", unix.SYS_EXIT_GROUP: "exit_group",
}
