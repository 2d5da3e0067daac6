package sync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Every operation below works on a directory file descriptor plus one name, never on a
// full path: a directory of SRC replaced by a symlink while we look at it must not lead
// us (reading) out of SRC, nor (writing) out of DST. Directories are reached from the
// tree's root with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS).

// fileID identifies an inode.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{dev: uint64(st.Dev), ino: st.Ino} }

const (
	openDirFlags  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	openReadFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
)

// retryEINTR repeats a system call interrupted by a signal (Go's runtime sends them).
func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// lstatAt is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW).
func lstatAt(dirfd int, name string, st *unix.Stat_t) error {
	return retryEINTR(func() error { return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW) })
}

// openSrc opens name under dirfd for reading without touching its atime. O_NOATIME is
// refused (EPERM) on files we do not own when we lack CAP_FOWNER: then we fall back to a
// plain open, which is all an unprivileged rsync does too.
func openSrc(dirfd int, name string, flags int) (int, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
		return err
	})
	if err == unix.EPERM {
		err = retryEINTR(func() (err error) {
			fd, err = unix.Openat(dirfd, name, flags, 0)
			return err
		})
	}
	return fd, err
}

// openDirBeneath opens the directory rel (relative, "." for the root itself) under root
// without following any symlink on the way.
func openDirBeneath(root int, rel string, src bool) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(openDirFlags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	if src {
		how.Flags |= unix.O_NOATIME
	}
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat2(root, rel, &how)
		return err
	})
	if err == unix.EPERM && src {
		how.Flags &^= unix.O_NOATIME
		err = retryEINTR(func() (err error) {
			fd, err = unix.Openat2(root, rel, &how)
			return err
		})
	}
	return fd, err
}

// dirEntry is a name from a directory listing and its type (unix.DT_*, DT_UNKNOWN on
// filesystems that do not say).
type dirEntry struct {
	name  string
	dtype uint8
}

// readDir lists a directory opened as fd (from its start).
func readDir(fd int) ([]dirEntry, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	buf := make([]byte, 32<<10)
	var out []dirEntry
	for {
		var n int
		err := retryEINTR(func() (err error) {
			n, err = unix.Getdents(fd, buf)
			return err
		})
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		// struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name\0
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirEntry{name: s, dtype: b[18]})
			}
			b = b[reclen:]
		}
	}
}

// readDirNames lists only the names of a directory opened as fd.
func readDirNames(fd int) ([]string, error) {
	ents, err := readDir(fd)
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.name
	}
	return names, err
}

// procPath names the entry name inside the directory dirfd for the path-only calls
// (l*xattr, utimensat on a symlink): the kernel resolves the magic link to the very
// directory we hold, so no symlink can be slipped in between.
func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// fdPath is the /proc path of an open descriptor itself.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// splitRel splits a relative path into its parent ("." for the root) and last name.
func splitRel(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return ".", rel
	}
	return rel[:i], rel[i+1:]
}

// joinRel joins a relative directory path and a name.
func joinRel(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

// isUnder reports whether rel is dir itself or inside it.
func isUnder(rel, dir string) bool {
	return rel == dir || dir == "." || strings.HasPrefix(rel, dir+"/")
}

// removeAllAt removes name (any type, a directory with all its contents) under dirfd.
func removeAllAt(dirfd int, name string) error {
	err := retryEINTR(func() error { return unix.Unlinkat(dirfd, name, 0) })
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, oerr := retryOpenDir(dirfd, name)
	if oerr != nil {
		if oerr == unix.ENOENT {
			return nil
		}
		if oerr == unix.ENOTDIR || oerr == unix.ELOOP {
			return err
		}
		return oerr
	}
	names, lerr := readDirNames(fd)
	for _, n := range names {
		if lerr != nil {
			break
		}
		lerr = removeAllAt(fd, n)
	}
	unix.Close(fd)
	if lerr != nil {
		return lerr
	}
	err = retryEINTR(func() error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
	if err == unix.ENOENT {
		return nil
	}
	return err
}

func retryOpenDir(dirfd int, name string) (int, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, openDirFlags, 0)
		return err
	})
	return fd, err
}

// tempName is a name for an entry being built in a DST directory: hidden, unlikely to
// clash, and recognisable when a crash leaves one behind (the next pass removes it,
// since SRC has no such name).
func tempName(name string, seq uint64) string {
	t := fmt.Sprintf(".livemig.%x.", seq)
	if len(t)+len(name) > 255 {
		name = name[:255-len(t)]
	}
	return t + name
}

// isNoSpace tells whether err means DST is full: the mirror stops on it.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}
