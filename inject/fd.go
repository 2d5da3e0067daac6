package inject

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FdState is what the kernel holds for one fd of the process.
type FdState struct {
	Flags   int   // F_GETFL: access mode and status flags (O_APPEND, O_NONBLOCK, O_DIRECT, ...)
	Cloexec bool  // FD_CLOEXEC
	Offset  int64 // file position
}

// FdState reads fd's flags, FD_CLOEXEC and offset. They come from /proc/PID/fdinfo,
// which holds them exactly while the process is stopped, at a fraction of the cost of
// injected fcntl and lseek calls.
func (p *Process) FdState(fd int) (FdState, error) {
	var st FdState
	err := p.run(func() (err error) {
		st, err = p.fdState(fd)
		return err
	})
	return st, err
}

func (p *Process) fdState(fd int) (FdState, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", p.pid, fd))
	if errors.Is(err, fs.ErrNotExist) {
		return FdState{}, fmt.Errorf("fd %d of pid %d is not open: %w", fd, p.pid, unix.EBADF)
	}
	if err != nil {
		return FdState{}, fmt.Errorf("fd %d of pid %d: %w", fd, p.pid, err)
	}
	st, err := parseFdinfo(data)
	if err != nil {
		return st, fmt.Errorf("fdinfo of fd %d of pid %d: %w", fd, p.pid, err)
	}
	return st, nil
}

// parseFdinfo reads the pos and flags lines of a /proc/PID/fdinfo/N file. Its flags are
// the open file's flags plus O_CLOEXEC when the fd has FD_CLOEXEC.
func parseFdinfo(data []byte) (FdState, error) {
	var st FdState
	var havePos, haveFlags bool
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "pos":
			st.Offset, err = strconv.ParseInt(v, 10, 64)
			havePos = true
		case "flags":
			var fl int64
			fl, err = strconv.ParseInt(v, 8, 64)
			st.Flags, st.Cloexec = int(fl)&^unix.O_CLOEXEC, fl&unix.O_CLOEXEC != 0
			haveFlags = true
		}
		if err != nil {
			return st, fmt.Errorf("%s: %w", k, err)
		}
	}
	if !havePos || !haveFlags {
		return st, fmt.Errorf("no pos or flags in %q", data)
	}
	return st, nil
}

// atFdcwd is AT_FDCWD (-100) as a syscall argument.
const atFdcwd = ^uintptr(0) - 99

// flagsNeverReopened are open flags that only make sense when a file is first created or
// opened; reopening an fd with them could create or truncate the file.
const flagsNeverReopened = unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY | unix.O_CLOEXEC

// Swap re-points fd at path inside the process: path is opened (in the process's own
// mount namespace, root and cwd) with fd's F_GETFL flags — O_APPEND, O_NONBLOCK, O_DIRECT
// kept, never O_CREAT or O_TRUNC — at fd's offset, and put on fd's number by dup3 with
// FD_CLOEXEC kept. A directory is reopened at its start: directory offsets are cookies of
// one filesystem and mean nothing on another. If any step fails, fd is left as it was and
// the error carries the errno from inside the process.
func (p *Process) Swap(fd int, path string) error {
	return p.run(func() error {
		if err := p.swap(fd, path); err != nil {
			return fmt.Errorf("swap fd %d of pid %d to %s: %w", fd, p.pid, path, err)
		}
		return nil
	})
}

func (p *Process) swap(fd int, path string) error {
	st, err := p.fdState(fd)
	if err != nil {
		return err
	}
	if err := p.checkSwapTarget(path); err != nil {
		return err
	}
	p.ResetScratch()
	pathAddr, err := p.putString(path)
	if err != nil {
		return err
	}
	calls := reopenCalls(fd, st, pathAddr, 0)
	done, err := p.batch(calls)
	if err != nil && len(done) > 0 && len(done) < len(calls)-1 {
		// The new file is open but not in place: close it, fd is as it was.
		if _, cerr := p.call("close", unix.SYS_CLOSE, done[0]); cerr != nil {
			return errors.Join(err, cerr)
		}
	}
	return err
}

// reopenCalls are the calls of a swap, to be made as one batch whose call number open is
// the first of them: open the new file (the temporary fd), set the offset, put it on
// fd's number, close the temporary fd. A directory is reopened at its start (see Swap).
func reopenCalls(fd int, st FdState, pathAddr uintptr, open int) []Call {
	tmp := ResultOf(open)
	calls := []Call{{Name: "openat", Nr: unix.SYS_OPENAT, Args: []Arg{Val(atFdcwd), Val(pathAddr), Val(uintptr(st.Flags &^ flagsNeverReopened)), Val(0)}}}
	if st.Offset > 0 && st.Flags&unix.O_DIRECTORY == 0 {
		calls = append(calls, Call{Name: "lseek", Nr: unix.SYS_LSEEK, Args: []Arg{tmp, Val(uintptr(st.Offset)), Val(unix.SEEK_SET)}})
	}
	var dupFlags uintptr
	if st.Cloexec {
		dupFlags = unix.O_CLOEXEC
	}
	return append(calls,
		Call{Name: "dup3", Nr: unix.SYS_DUP3, Args: []Arg{tmp, Val(uintptr(fd)), Val(dupFlags)}},
		Call{Name: "close", Nr: unix.SYS_CLOSE, Args: []Arg{tmp}})
}

// checkSwapTarget refuses, before anything is injected, a path that is not a regular file
// or a directory as the process sees it: opening a fifo, say, could block the process for
// ever. The path is looked up through /proc/PID/root or /proc/PID/cwd, which resolve in
// the process's own root and mount namespace.
func (p *Process) checkSwapTarget(path string) error {
	base := fmt.Sprintf("/proc/%d/root", p.pid)
	if !filepath.IsAbs(path) {
		base = fmt.Sprintf("/proc/%d/cwd", p.pid)
	}
	fi, err := os.Stat(filepath.Join(base, path))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the errno; the path is named by the caller's message
		}
		return err
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return fmt.Errorf("%s is a %s: only regular files and directories are swapped", path, fileKind(fi.Mode()))
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return m.Type().String()
}

// Spare is a duplicate of an fd (or of the working directory) kept inside the process so
// that a Swap or Chdir can be undone exactly: it shares the original open file, with its
// offset and flags. It is close-on-exec; a spare of an fd is placed on a high number.
type Spare struct {
	Fd      int  // the duplicate's number in the process
	Target  int  // the fd it stands for; -1 for the working directory
	Cloexec bool // Target's FD_CLOEXEC, given back on Restore
}

// CwdTarget is Spare.Target for a spare of the working directory.
const CwdTarget = -1

// Spare keeps a duplicate of fd for Restore.
func (p *Process) Spare(fd int) (Spare, error) {
	var s Spare
	err := p.run(func() error {
		st, err := p.fdState(fd)
		if err != nil {
			return fmt.Errorf("spare: %w", err)
		}
		dup, err := p.dupHigh(fd)
		if err != nil {
			return fmt.Errorf("spare fd %d of pid %d: %w", fd, p.pid, err)
		}
		s = Spare{Fd: dup, Target: fd, Cloexec: st.Cloexec}
		return nil
	})
	return s, err
}

// SpareCwd keeps a handle on the working directory for Restore: an O_PATH fd of ".",
// opened close-on-exec in one call (the pause counts every injected call).
func (p *Process) SpareCwd() (Spare, error) {
	var s Spare
	err := p.run(func() error {
		p.ResetScratch()
		dot, err := p.putString(".")
		if err != nil {
			return err
		}
		fd, err := p.call("openat", unix.SYS_OPENAT, atFdcwd, dot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("spare cwd of pid %d: %w", p.pid, err)
		}
		s = Spare{Fd: int(fd), Target: CwdTarget}
		return nil
	})
	return s, err
}

// dupHigh duplicates fd close-on-exec onto a high number, out of the way of the numbers
// the program itself will get, or onto any free number when the high ones are taken.
func (p *Process) dupHigh(fd int) (int, error) {
	dup, err := p.call("fcntl F_DUPFD_CLOEXEC", unix.SYS_FCNTL, uintptr(fd), unix.F_DUPFD_CLOEXEC, uintptr(p.spareBase()))
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.EINVAL) {
		dup, err = p.call("fcntl F_DUPFD_CLOEXEC", unix.SYS_FCNTL, uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	return int(dup), err
}

// Restore puts back what s stands for (the fd, with its FD_CLOEXEC, or the working
// directory) and closes the spare.
func (p *Process) Restore(s Spare) error {
	return p.run(func() error {
		var err error
		if s.Target == CwdTarget {
			_, err = p.call("fchdir", unix.SYS_FCHDIR, uintptr(s.Fd))
		} else {
			var dupFlags uintptr
			if s.Cloexec {
				dupFlags = unix.O_CLOEXEC
			}
			_, err = p.call("dup3", unix.SYS_DUP3, uintptr(s.Fd), uintptr(s.Target), dupFlags)
		}
		if err == nil {
			_, err = p.call("close", unix.SYS_CLOSE, uintptr(s.Fd))
		}
		if err != nil {
			return fmt.Errorf("restore %s of pid %d from spare fd %d: %w", s.what(), p.pid, s.Fd, err)
		}
		return nil
	})
}

// DropSpare closes a spare that is no longer needed (the swap is committed).
func (p *Process) DropSpare(s Spare) error { return p.DropSpares([]Spare{s}) }

// DropSpares closes spares that are no longer needed, in one batch.
func (p *Process) DropSpares(spares []Spare) error {
	if len(spares) == 0 {
		return nil
	}
	return p.run(func() error {
		p.ResetScratch()
		calls := make([]Call, len(spares))
		for i, s := range spares {
			calls[i] = Call{Name: fmt.Sprintf("close spare fd %d of %s", s.Fd, s.what()), Nr: unix.SYS_CLOSE, Args: []Arg{Val(uintptr(s.Fd))}}
		}
		if _, err := p.batch(calls); err != nil {
			return fmt.Errorf("pid %d: %w", p.pid, err)
		}
		return nil
	})
}

func (s Spare) what() string {
	if s.Target == CwdTarget {
		return "cwd"
	}
	return fmt.Sprintf("fd %d", s.Target)
}

// Chdir changes the process's working directory to path (resolved in the process).
func (p *Process) Chdir(path string) error {
	return p.run(func() error {
		p.ResetScratch()
		addr, err := p.putString(path)
		if err == nil {
			_, err = p.call("chdir", unix.SYS_CHDIR, addr)
		}
		if err != nil {
			return fmt.Errorf("chdir pid %d to %s: %w", p.pid, path, err)
		}
		return nil
	})
}

// SwapRequest asks for Fd to be re-pointed at Path (see Swap).
type SwapRequest struct {
	Fd   int
	Path string
	// Known, if set, is Fd's state as the caller read it while the process was held
	// (from /proc/PID/fdinfo); it saves reading it again inside the pause.
	Known *FdState
}

// swapsPerBatch bounds the code of one batch of SwapAll to codeSize.
const swapsPerBatch = 16

// SwapAll does what Spare and then Swap do, for many fds, in a few resumes of the
// process: one batch per swapsPerBatch fds, each fd dup'ed to a spare, the new file
// opened, seeked, put on the fd's number and the temporary fd closed. It returns the
// spares of the fds swapped, in order. It stops at the first failure: the fds before it
// are swapped (their spares are returned with the error), the failed one and those
// after it are as they were.
func (p *Process) SwapAll(reqs []SwapRequest) ([]Spare, error) {
	var spares []Spare
	err := p.run(func() error {
		for start := 0; start < len(reqs); start += swapsPerBatch {
			chunk := reqs[start:min(start+swapsPerBatch, len(reqs))]
			done, err := p.swapBatch(chunk)
			spares = append(spares, done...)
			if err != nil {
				return err
			}
		}
		return nil
	})
	return spares, err
}

// swapBatch runs one batch of SwapAll.
func (p *Process) swapBatch(reqs []SwapRequest) ([]Spare, error) {
	p.ResetScratch()
	base := p.spareBase()
	type plan struct {
		st          FdState
		first, dup3 int // index of the spare's call and of the dup3 in calls
	}
	var calls []Call
	var plans []plan
	var badRequest error // a request refused before anything is injected; those before it go ahead
	for _, r := range reqs {
		var st FdState
		var err error
		if r.Known != nil {
			st = *r.Known
		} else {
			st, err = p.fdState(r.Fd)
		}
		if err == nil {
			err = p.checkSwapTarget(r.Path)
		}
		var pathAddr uintptr
		if err == nil {
			pathAddr, err = p.putString(r.Path)
		}
		if err != nil {
			badRequest = fmt.Errorf("swap fd %d of pid %d to %s: %w", r.Fd, p.pid, r.Path, err)
			break
		}
		first := len(calls)
		calls = append(calls, Call{Name: "fcntl F_DUPFD_CLOEXEC", Nr: unix.SYS_FCNTL, Args: []Arg{Val(uintptr(r.Fd)), Val(unix.F_DUPFD_CLOEXEC), Val(uintptr(base))}})
		calls = append(calls, reopenCalls(r.Fd, st, pathAddr, first+1)...)
		dup3 := len(calls) - 2
		plans = append(plans, plan{st: st, first: first, dup3: dup3})
	}
	if len(calls) == 0 {
		return nil, badRequest
	}
	results, err := p.batch(calls)
	var spares []Spare
	for i, pl := range plans {
		if len(results) <= pl.dup3 {
			// It did not reach its dup3: fd is as it was; close the new file and the spare.
			errs := []error{err}
			for _, k := range []int{pl.first + 1, pl.first} {
				if k < len(results) {
					if _, cerr := p.call("close", unix.SYS_CLOSE, results[k]); cerr != nil {
						errs = append(errs, cerr)
					}
				}
			}
			return spares, fmt.Errorf("swap fd %d of pid %d to %s: %w", reqs[i].Fd, p.pid, reqs[i].Path, errors.Join(errs...))
		}
		spares = append(spares, Spare{Fd: int(results[pl.first]), Target: reqs[i].Fd, Cloexec: pl.st.Cloexec})
	}
	if err != nil { // only the closing of a temporary fd can fail here
		return spares, fmt.Errorf("pid %d: %w", p.pid, err)
	}
	return spares, badRequest
}

// spareBase is the lowest number spares take: high, out of the way of the numbers the
// program itself will get.
func (p *Process) spareBase() int {
	var rl unix.Rlimit
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, nil, &rl); err == nil {
		return int(min(rl.Cur/2, 1024))
	}
	return 3
}

// ChdirKeepingSpare changes the working directory to path, in one batch with SpareCwd's
// work: the spare stands for the directory left.
func (p *Process) ChdirKeepingSpare(path string) (Spare, error) {
	var s Spare
	err := p.run(func() error {
		p.ResetScratch()
		dot, err := p.putString(".")
		var target uintptr
		if err == nil {
			target, err = p.putString(path)
		}
		if err != nil {
			return err
		}
		done, err := p.batch([]Call{
			{Name: "openat .", Nr: unix.SYS_OPENAT, Args: []Arg{Val(atFdcwd), Val(dot), Val(unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC), Val(0)}},
			{Name: "chdir", Nr: unix.SYS_CHDIR, Args: []Arg{Val(target)}},
		})
		if err != nil {
			if len(done) == 1 {
				if _, cerr := p.call("close", unix.SYS_CLOSE, done[0]); cerr != nil {
					err = errors.Join(err, cerr)
				}
			}
			return fmt.Errorf("chdir pid %d to %s: %w", p.pid, path, err)
		}
		s = Spare{Fd: int(done[0]), Target: CwdTarget}
		return nil
	})
	return s, err
}
