package inject

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Arg is a syscall argument: a value, or the result of an earlier call of the batch.
type Arg struct {
	v    uintptr
	from int // index of the call whose result this is; -1 for a value
}

// Val is an argument with the value v.
func Val(v uintptr) Arg { return Arg{v: v, from: -1} }

// ResultOf is the result of call i of the same batch (an fd it opened, say).
func ResultOf(i int) Arg { return Arg{from: i} }

// Call is one syscall of a batch.
type Call struct {
	Name string // for errors
	Nr   uintptr
	Args []Arg
}

// pending marks a result slot whose call has not run.
const pending = ^uintptr(0) - 4096

// batch runs calls in order inside the process, with a single resume of the thread
// where the architecture allows it: generated code in an executable page of our own
// (never the process's code) makes the calls one after the other and stops at a trap.
// It stops at the first call that fails. It returns the results of the calls that ran
// and, if one failed, its error (a *SyscallError naming the call). Tracer thread only.
func (p *Process) batch(calls []Call) ([]uintptr, error) {
	for i, c := range calls {
		if len(c.Args) > 6 {
			return nil, fmt.Errorf("%s: %d arguments, at most 6", c.Name, len(c.Args))
		}
		for _, a := range c.Args {
			if a.from >= i {
				return nil, fmt.Errorf("%s: argument from call %d, which does not come before it", c.Name, a.from)
			}
		}
	}
	if err := p.ensureMemory(); err != nil {
		return nil, err
	}
	if p.code == 0 {
		return p.batchByStep(calls)
	}
	slots := make([]byte, 8*len(calls))
	for i := range calls {
		binary.LittleEndian.PutUint64(slots[8*i:], uint64(pending))
	}
	results, err := p.putScratch(slots)
	if err != nil {
		return nil, err
	}
	code := encodeBatch(calls, results)
	if len(code) > codeSize {
		return nil, fmt.Errorf("batch of %d calls too long (%d bytes of code)", len(calls), len(code))
	}
	if err := p.writeMemory(p.code, code); err != nil {
		return nil, err
	}
	if err := p.runCode(p.worker, p.code, p.code+uintptr(len(code))); err != nil {
		return nil, err
	}
	if err := p.readMemory(results, slots); err != nil {
		return nil, err
	}
	var out []uintptr
	for i, c := range calls {
		r := uintptr(binary.LittleEndian.Uint64(slots[8*i:]))
		if r == pending {
			break
		}
		if e := -int(r); e > 0 && e < 4096 {
			return out, &SyscallError{Name: c.Name, Errno: unix.Errno(e)}
		}
		out = append(out, r)
	}
	return out, nil
}

const codeSize = 16 << 10

// runCode runs t from start until it reaches end (just past the final trap). A stop on
// the way is handled as in stepOverSyscall: an interrupt or group stop is resumed, a
// signal of the process kept for Detach; a fault inside our code is an error.
func (p *Process) runCode(t *thread, start, end uintptr) error {
	p.colocate()
	r := t.saved
	r.prepareSyscall(start, 0, [6]uintptr{})
	if err := setRegs(t.tid, &r); err != nil {
		return p.lost(t, "set registers", err)
	}
	t.changed = true
	for {
		if err := unix.PtraceCont(t.tid, 0); err != nil {
			return p.lost(t, "continue", err)
		}
		s, err := p.waitThread(t)
		if err != nil {
			return err
		}
		if s.event != 0 {
			continue
		}
		if err := getRegs(t.tid, &r); err != nil {
			return p.lost(t, "read registers", err)
		}
		pc := r.pc()
		switch {
		case s.sig == unix.SIGTRAP && pc == end:
			return nil
		case pc >= start && pc < end && (s.sig == unix.SIGSEGV || s.sig == unix.SIGILL || s.sig == unix.SIGBUS):
			return fmt.Errorf("injected code faulted with %v at %#x", s.sig, pc)
		}
		p.deferSignal(t)
	}
}

// batchByStep runs a batch one call at a time.
func (p *Process) batchByStep(calls []Call) ([]uintptr, error) {
	var out []uintptr
	for _, c := range calls {
		var args []uintptr
		for _, a := range c.Args {
			if a.from >= 0 {
				args = append(args, out[a.from])
			} else {
				args = append(args, a.v)
			}
		}
		r, err := p.call(c.Name, c.Nr, args...)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
