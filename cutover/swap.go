package cutover

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/inject"
)

// mover moves one frozen process: it swaps its fds, cwd and mappings onto the new
// storage through inject, remembers how to undo each step, and checks the result in /proc.
type mover struct {
	proc      *Process
	ip        *inject.Process
	paths     pathMap
	leftovers []Leftover
	// foreign: the process is in another mount namespace, where our paths name other files.
	foreign bool
	// keepAttached: the freezer holds the process through ptrace and lets it go at thaw.
	keepAttached bool

	undo    []func() error // applied steps, undone in reverse order
	spares  []inject.Spare // dropped at commit
	checks  []check        // what verify must find in /proc
	content []string       // rels whose content verify compares (those written recently)

	fdsMoved, mapsMoved, locksTaken int
	cwdMoved                        bool
}

// check is one thing verify expects of the process: /proc/PID/<link> leads to dev/ino.
type check struct {
	what     string
	link     string // fd/N or cwd; empty for a mapping
	mapStart uint64
	dev, ino uint64
}

func newMover(p *Process, ip *inject.Process, paths pathMap, keepAttached bool) *mover {
	m := &mover{proc: p, ip: ip, paths: paths, keepAttached: keepAttached, leftovers: append([]Leftover(nil), p.Leftovers...)}
	if !sameMountNamespace(p.PID) {
		m.foreign = true
		m.leftover("process", fmt.Sprintf("/proc/%d/ns/mnt", p.PID), "in another mount namespace, where our paths name other files: not moved")
	}
	return m
}

func sameMountNamespace(pid int) bool {
	ours, err1 := os.Stat("/proc/self/ns/mnt")
	theirs, err2 := os.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	return err1 == nil && err2 == nil && os.SameFile(ours, theirs)
}

// swap moves everything of the process that can be moved, on its tracer thread.
func (m *mover) swap() error {
	if m.foreign {
		return nil
	}
	return m.ip.Do(func() error {
		p := m.proc
		var files []FD
		for _, fd := range p.FDs {
			switch {
			case fd.TID != p.PID && (fd.Kind == KindFile || fd.Kind == KindDir || fd.Kind == KindDeleted):
				m.leftover(fmt.Sprintf("fd %d of thread %d", fd.Num, fd.TID), fd.Path, "the thread has its own fd table: not moved")
			case fd.Kind == KindFile || fd.Kind == KindDir:
				files = append(files, fd)
			case fd.Kind == KindDeleted:
				if err := m.swapDeleted(fd); err != nil {
					return err
				}
			}
		}
		targets := make([]string, len(files))
		for i, fd := range files {
			targets[i] = m.paths.new(fd.Rel)
		}
		if err := m.swapFDs(files, targets); err != nil {
			return err
		}
		for _, loc := range p.Cwd {
			if loc.TID != p.PID {
				m.leftover(fmt.Sprintf("cwd of thread %d", loc.TID), loc.Path, "the thread has its own fs context: not moved")
				continue
			}
			if err := m.swapCwd(loc); err != nil {
				return err
			}
		}
		for _, loc := range p.Root {
			m.leftover("root", loc.Path, "the process is chrooted under SRC: its paths cannot name DST")
		}
		for _, mp := range p.Maps {
			if mp.Kind == KindSharedMap || (mp.Kind == KindPrivateMap && mp.WrittenBytes == 0) {
				if err := m.swapMapping(mp); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (m *mover) leftover(what, path, reason string) {
	m.leftovers = append(m.leftovers, Leftover{What: what, Path: path, Reason: reason})
}

// swapFDs re-points fds at targets, all in a few batches, keeping
// a spare of each old file for the undo, and takes again on the new files the locks the
// process held on the old ones.
func (m *mover) swapFDs(fds []FD, targets []string) error {
	reqs := make([]inject.SwapRequest, len(fds))
	for i, fd := range fds {
		reqs[i] = inject.SwapRequest{Fd: fd.Num, Path: targets[i], Known: fd.state()}
	}
	spares, err := m.ip.SwapAll(reqs)
	for i, spare := range spares {
		if lerr := m.swapped(fds[i], reqs[i].Path, spare); err == nil {
			err = lerr
		}
	}
	return err
}

// state is what discovery read of the fd, taken while the process was frozen: still true.
func (fd FD) state() *inject.FdState {
	return &inject.FdState{Flags: fd.Flags, Cloexec: fd.CloseOnExec, Offset: fd.Pos}
}

// swapped records a done swap (its undo, its spare, what verify must see) and takes the
// locks again on the new file.
func (m *mover) swapped(fd FD, target string, spare inject.Spare) error {
	m.spares = append(m.spares, spare)
	m.undo = append(m.undo, func() error {
		if err := m.ip.Restore(spare); err != nil {
			return err
		}
		// Closing the new file dropped the process's POSIX locks; the old flock and OFD
		// locks were held by the spare all along.
		return m.takeLocks(fd.Num, fd.Locks, true)
	})
	m.fdsMoved++
	if fd.Kind == KindFile && fd.Flags&unix.O_ACCMODE != unix.O_RDONLY {
		m.content = append(m.content, fd.Rel)
	}
	if err := m.takeLocks(fd.Num, fd.Locks, false); err != nil {
		return err
	}
	return m.expect(fmt.Sprintf("fd %d", fd.Num), "fd/"+strconv.Itoa(fd.Num), 0, target)
}

// swapDeleted gives a deleted-but-open file a copy on the new storage: its content is
// copied under a hidden name, the fd is swapped onto it (same offset and flags), and the
// name is removed again, so it is deleted-but-open there too.
func (m *mover) swapDeleted(fd FD) error {
	dir := m.paths.new(filepath.Dir(fd.Rel))
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = m.paths.new("")
	}
	hidden := filepath.Join(dir, fmt.Sprintf(".livemig-deleted-%d-%d", m.proc.PID, fd.Num))
	if err := copyOpenFile(fmt.Sprintf("/proc/%d/fd/%d", m.proc.PID, fd.Num), hidden, fd.Mode); err != nil {
		return fmt.Errorf("copy deleted file %s (fd %d of pid %d): %w", fd.Path, fd.Num, m.proc.PID, err)
	}
	defer os.Remove(hidden)
	return m.swapFDs([]FD{fd}, []string{hidden})
}

func copyOpenFile(from, to string, mode uint32) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(mode&0o777))
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(in.Fd()), &st); err == nil {
		_ = out.Chown(int(st.Uid), int(st.Gid))
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func (m *mover) swapCwd(loc Location) error {
	target := m.paths.new(loc.Rel)
	spare, err := m.ip.ChdirKeepingSpare(target)
	if err != nil {
		return err
	}
	m.spares = append(m.spares, spare)
	m.undo = append(m.undo, func() error { return m.ip.Restore(spare) })
	m.cwdMoved = true
	return m.expect("cwd", "cwd", 0, target)
}

func (m *mover) swapMapping(mp Mapping) error {
	length := uintptr(mp.End - mp.Start)
	target := m.paths.new(mp.Rel)
	if err := m.ip.Remap(uintptr(mp.Start), length, mp.Prot, mp.Shared, target, int64(mp.Offset)); err != nil {
		return err
	}
	m.undo = append(m.undo, func() error {
		return m.ip.Remap(uintptr(mp.Start), length, mp.Prot, mp.Shared, m.paths.old(mp.Rel), int64(mp.Offset))
	})
	m.mapsMoved++
	if mp.Shared && mp.Prot&unix.PROT_WRITE != 0 {
		m.content = append(m.content, mp.Rel)
	}
	return m.expect(fmt.Sprintf("map %x-%x", mp.Start, mp.End), "", mp.Start, target)
}

// expect records that /proc must show the process reaching target's inode.
func (m *mover) expect(what, link string, mapStart uint64, target string) error {
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return fmt.Errorf("stat %s: %w", target, err)
	}
	m.checks = append(m.checks, check{what: what, link: link, mapStart: mapStart, dev: st.Dev, ino: st.Ino})
	return nil
}

// verify checks in /proc that every moved item of the process now reaches the new
// storage, and that the new storage holds the same content as the old for every file
// the process may have written.
func (m *mover) verify() error {
	pid := m.proc.PID
	var maps []byte
	for _, c := range m.checks {
		var dev, ino uint64
		if c.link != "" {
			var st unix.Stat_t
			if err := unix.Stat(fmt.Sprintf("/proc/%d/%s", pid, c.link), &st); err != nil {
				return fmt.Errorf("pid %d %s: %w", pid, c.what, err)
			}
			dev, ino = st.Dev, st.Ino
		} else {
			if maps == nil {
				var err error
				if maps, err = os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)); err != nil {
					return fmt.Errorf("pid %d maps: %w", pid, err)
				}
			}
			var ok bool
			if dev, ino, ok = mappingInode(maps, c.mapStart); !ok {
				return fmt.Errorf("pid %d %s: mapping not found", pid, c.what)
			}
		}
		if dev != c.dev || ino != c.ino {
			return fmt.Errorf("pid %d %s still reaches device %d:%d inode %d, not the new file (inode %d)", pid, c.what, unix.Major(dev), unix.Minor(dev), ino, c.ino)
		}
	}
	var g errgroup.Group
	g.SetLimit(4)
	for _, rel := range m.content {
		g.Go(func() error {
			if err := sameContent(m.paths.old(rel), m.paths.new(rel)); err != nil {
				return fmt.Errorf("pid %d: %w", pid, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// mappingInode finds the device and inode of the mapping that starts at start.
func mappingInode(maps []byte, start uint64) (dev, ino uint64, ok bool) {
	prefix := strconv.FormatUint(start, 16) + "-"
	for _, line := range bytes.Split(maps, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(prefix)) {
			continue
		}
		f := strings.Fields(string(line))
		if len(f) < 5 {
			return 0, 0, false
		}
		majmin := strings.SplitN(f[3], ":", 2)
		if len(majmin) != 2 {
			return 0, 0, false
		}
		maj, err1 := strconv.ParseUint(majmin[0], 16, 32)
		min, err2 := strconv.ParseUint(majmin[1], 16, 32)
		ino, err3 := strconv.ParseUint(f[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return 0, 0, false
		}
		return unix.Mkdev(uint32(maj), uint32(min)), ino, true
	}
	return 0, 0, false
}

// compareBufs holds the buffers of sameContent: verify runs inside the pause, where
// allocating and zeroing fresh buffers for every file costs more than the comparison.
var compareBufs = sync.Pool{New: func() any { return new([2][64 << 10]byte) }}

func sameContent(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	bufs := compareBufs.Get().(*[2][64 << 10]byte)
	defer compareBufs.Put(bufs)
	for off := int64(0); ; {
		na, errA := io.ReadFull(fa, bufs[0][:])
		nb, errB := io.ReadFull(fb, bufs[1][:])
		if na != nb || !bytes.Equal(bufs[0][:na], bufs[1][:nb]) {
			return fmt.Errorf("%s differs from %s near offset %d", b, a, off)
		}
		off += int64(na)
		endA := errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF)
		endB := errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF)
		if endA && endB {
			return nil
		}
		if errA != nil && !endA {
			return errA
		}
		if errB != nil && !endB {
			return errB
		}
	}
}

// commit drops the spares and lets the process go (in sigstop mode it stays stopped
// until the freezer thaws it; in ptrace mode the freezer's thaw detaches it).
func (m *mover) commit() error {
	errs := []error{m.ip.DropSpares(m.spares)}
	if !m.keepAttached {
		errs = append(errs, m.ip.Detach())
	}
	return errors.Join(errs...)
}

// rollback undoes every applied step, newest first, and lets the process go.
func (m *mover) rollback() error {
	var errs []error
	err := m.ip.Do(func() error {
		for i := len(m.undo) - 1; i >= 0; i-- {
			if err := m.undo[i](); err != nil {
				errs = append(errs, err)
			}
		}
		return nil
	})
	m.undo, m.spares = nil, nil
	errs = append(errs, err)
	if !m.keepAttached {
		errs = append(errs, m.ip.Detach())
	}
	return errors.Join(errs...)
}

// takeLocks takes locks on fd. Back on the old file (undo) only POSIX locks need it: the
// others belong to the open file, which the spare kept.
func (m *mover) takeLocks(fd int, locks []Lock, posixOnly bool) error {
	for _, l := range locks {
		if posixOnly && l.Kind != "POSIX" {
			continue
		}
		var err error
		switch l.Kind {
		case "FLOCK":
			how := unix.LOCK_SH
			if l.Write {
				how = unix.LOCK_EX
			}
			err = m.ip.Flock(fd, how)
		case "POSIX", "OFDLCK":
			lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: l.Start}
			if l.Write {
				lk.Type = unix.F_WRLCK
			}
			if l.End >= 0 {
				lk.Len = l.End - l.Start + 1
			}
			cmd := unix.F_SETLK
			if l.Kind == "OFDLCK" {
				cmd = unix.F_OFD_SETLK
			}
			err = m.ip.SetLock(fd, cmd, lk)
		default:
			continue
		}
		if err != nil {
			return err
		}
		if !posixOnly {
			m.locksTaken++
		}
	}
	return nil
}
