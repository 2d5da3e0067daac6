package inject

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Flock takes an flock(2) lock on fd again (how: LOCK_SH or LOCK_EX), without waiting:
// a lock that another process holds meanwhile is an error, never a hang.
func (p *Process) Flock(fd int, how int) error {
	return p.run(func() error {
		if _, err := p.call("flock", unix.SYS_FLOCK, uintptr(fd), uintptr(how|unix.LOCK_NB)); err != nil {
			return fmt.Errorf("flock fd %d of pid %d: %w", fd, p.pid, err)
		}
		return nil
	})
}

// SetLock takes a record lock on fd, without waiting: cmd is F_SETLK (a POSIX lock,
// owned by the process) or F_OFD_SETLK (owned by the open file).
func (p *Process) SetLock(fd int, cmd int, lk unix.Flock_t) error {
	return p.run(func() error {
		p.ResetScratch()
		addr, err := p.putScratch(unsafe.Slice((*byte)(unsafe.Pointer(&lk)), unsafe.Sizeof(lk)))
		if err == nil {
			_, err = p.call("fcntl set lock", unix.SYS_FCNTL, uintptr(fd), uintptr(cmd), addr)
		}
		if err != nil {
			return fmt.Errorf("lock fd %d of pid %d (%d-%d): %w", fd, p.pid, lk.Start, lk.Start+lk.Len, err)
		}
		return nil
	})
}

// Remap maps path over [addr, addr+length) of the process in place of what is mapped
// there, with the same protection, sharing and file offset: MAP_FIXED replaces the old
// mapping in one step, so no other mapping can come in between.
func (p *Process) Remap(addr, length uintptr, prot int, shared bool, path string, offset int64) error {
	return p.run(func() error {
		if err := p.remap(addr, length, prot, shared, path, offset); err != nil {
			return fmt.Errorf("remap %#x-%#x of pid %d onto %s: %w", addr, addr+length, p.pid, path, err)
		}
		return nil
	})
}

func (p *Process) remap(addr, length uintptr, prot int, shared bool, path string, offset int64) error {
	if err := p.checkSwapTarget(path); err != nil {
		return err
	}
	p.ResetScratch()
	pathAddr, err := p.putString(path)
	if err != nil {
		return err
	}
	flags, mapFlags := unix.O_RDONLY, unix.MAP_PRIVATE
	if shared {
		mapFlags = unix.MAP_SHARED
		if prot&unix.PROT_WRITE != 0 {
			flags = unix.O_RDWR
		}
	}
	done, err := p.batch([]Call{
		{Name: "openat", Nr: unix.SYS_OPENAT, Args: []Arg{Val(atFdcwd), Val(pathAddr), Val(uintptr(flags | unix.O_CLOEXEC)), Val(0)}},
		{Name: "mmap", Nr: unix.SYS_MMAP, Args: []Arg{Val(addr), Val(length), Val(uintptr(prot)), Val(uintptr(mapFlags | unix.MAP_FIXED)), ResultOf(0), Val(uintptr(offset))}},
		{Name: "close", Nr: unix.SYS_CLOSE, Args: []Arg{ResultOf(0)}},
	})
	if err != nil && len(done) == 1 { // the mmap failed: the old mapping stays
		if _, cerr := p.call("close", unix.SYS_CLOSE, done[0]); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	if err == nil && done[1] != addr {
		err = fmt.Errorf("mapped at %#x instead", done[1])
	}
	return err
}
