package sync

import (
	"bytes"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// entryRef names one directory entry: the directory that holds it and its name, plus an
// open descriptor of the entry itself when we have one (regular files and directories),
// which the f* calls use. Without one, xattrs go through procPath.
type entryRef struct {
	dirfd int
	name  string
	fd    int // -1 when not open
}

func (r entryRef) path() string { return procPath(r.dirfd, r.name) }

var isRoot = os.Geteuid() == 0

// listXattrNames lists the extended attribute names of r, nil when it has none or the
// filesystem has no xattrs at all.
func listXattrNames(r entryRef) ([]string, error) {
	for {
		var size int
		err := retryEINTR(func() (err error) {
			if r.fd >= 0 {
				size, err = unix.Flistxattr(r.fd, nil)
			} else {
				size, err = unix.Llistxattr(r.path(), nil)
			}
			return err
		})
		if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
			return nil, nil
		}
		if err != nil || size == 0 {
			return nil, err
		}
		buf := make([]byte, size)
		err = retryEINTR(func() (err error) {
			if r.fd >= 0 {
				size, err = unix.Flistxattr(r.fd, buf)
			} else {
				size, err = unix.Llistxattr(r.path(), buf)
			}
			return err
		})
		if err == unix.ERANGE {
			continue // grew between the two calls
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, n := range bytes.Split(buf[:size], []byte{0}) {
			if len(n) > 0 {
				names = append(names, string(n))
			}
		}
		sort.Strings(names)
		return names, nil
	}
}

func getXattr(r entryRef, name string) ([]byte, error) {
	for {
		var size int
		err := retryEINTR(func() (err error) {
			if r.fd >= 0 {
				size, err = unix.Fgetxattr(r.fd, name, nil)
			} else {
				size, err = unix.Lgetxattr(r.path(), name, nil)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		err = retryEINTR(func() (err error) {
			if r.fd >= 0 {
				size, err = unix.Fgetxattr(r.fd, name, buf)
			} else {
				size, err = unix.Lgetxattr(r.path(), name, buf)
			}
			return err
		})
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:size], nil
	}
}

// readXattrs returns every extended attribute of r (ACLs are the system.posix_acl_*
// ones). An attribute that vanishes between list and get is left out.
func readXattrs(r entryRef) (map[string][]byte, error) {
	names, err := listXattrNames(r)
	if err != nil || len(names) == 0 {
		return nil, err
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		v, err := getXattr(r, n)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[n] = v
	}
	return out, nil
}

// syncXattrs makes dst's extended attributes exactly src's. It reports whether it changed
// anything.
func syncXattrs(src, dst entryRef) (bool, error) {
	sx, err := readXattrs(src)
	if err != nil {
		return false, &PathError{Op: "read xattrs", Err: err}
	}
	dx, err := readXattrs(dst)
	if err != nil {
		return false, &PathError{Op: "read xattrs", Err: err}
	}
	changed := false
	for n, v := range sx {
		if old, ok := dx[n]; ok && bytes.Equal(old, v) {
			continue
		}
		err := retryEINTR(func() error {
			if dst.fd >= 0 {
				return unix.Fsetxattr(dst.fd, n, v, 0)
			}
			return unix.Lsetxattr(dst.path(), n, v, 0)
		})
		if err != nil {
			return changed, &PathError{Op: "set xattr " + n, Err: err}
		}
		changed = true
	}
	for n := range dx {
		if _, ok := sx[n]; ok {
			continue
		}
		err := retryEINTR(func() error {
			if dst.fd >= 0 {
				return unix.Fremovexattr(dst.fd, n)
			}
			return unix.Lremovexattr(dst.path(), n)
		})
		if err != nil && err != unix.ENODATA {
			return changed, &PathError{Op: "remove xattr " + n, Err: err}
		}
		changed = true
	}
	return changed, nil
}

// applyMeta makes dst's owner, xattrs, mode and times those of src (stat st). dstSt is
// dst's current stat, nil for an entry we just created (then everything is set). The
// order matters: chown clears setuid bits and file capabilities, so xattrs and mode
// come after it; setting an ACL rewrites the group bits, so chmod comes after that; and
// times come last because every other change touches ctime only, but writing would
// touch mtime.
//
// Unless thorough, xattrs are only compared when SRC's ctime is not older than DST's:
// every change of an xattr (or mode, owner) moves SRC's ctime, and DST's ctime is the
// moment we last wrote it, so an older SRC ctime means nothing changed since. This
// spares two listxattr calls per unchanged entry, which is most of a pass that finds
// nothing to do.
func applyMeta(st *unix.Stat_t, src, dst entryRef, dstSt *unix.Stat_t, thorough bool) (bool, error) {
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	changed := false
	if dstSt == nil || dstSt.Uid != st.Uid || dstSt.Gid != st.Gid {
		err := retryEINTR(func() error {
			if dst.fd >= 0 {
				return unix.Fchown(dst.fd, int(st.Uid), int(st.Gid))
			}
			return unix.Fchownat(dst.dirfd, dst.name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
		})
		// Without root, owners cannot be given away: like rsync, keep going without them.
		if err != nil && (isRoot || err != unix.EPERM) {
			return changed, &PathError{Op: "chown", Err: err}
		}
		changed = true
	}
	if thorough || dstSt == nil || !olderThan(st.Ctim, dstSt.Ctim) {
		xchanged, err := syncXattrs(src, dst)
		if err != nil {
			return changed, err
		}
		changed = changed || xchanged
	}
	if !isLink && (changed || dstSt.Mode&07777 != st.Mode&07777) {
		err := retryEINTR(func() error {
			if dst.fd >= 0 {
				return unix.Fchmod(dst.fd, st.Mode&07777)
			}
			return unix.Fchmodat(dst.dirfd, dst.name, st.Mode&07777, 0)
		})
		if err != nil {
			return changed, &PathError{Op: "chmod", Err: err}
		}
		changed = true
	}
	if dstSt == nil || dstSt.Mtim != st.Mtim {
		ts := []unix.Timespec{st.Atim, st.Mtim}
		err := retryEINTR(func() error {
			if dst.fd >= 0 {
				// By descriptor: no path lookup. Kernels before 5.8 refuse AT_EMPTY_PATH.
				if err := unix.UtimesNanoAt(dst.fd, "", ts, unix.AT_EMPTY_PATH); err != unix.EINVAL {
					return err
				}
			}
			return unix.UtimesNanoAt(dst.dirfd, dst.name, ts, unix.AT_SYMLINK_NOFOLLOW)
		})
		if err != nil {
			return changed, &PathError{Op: "set times", Err: err}
		}
		changed = true
	}
	return changed, nil
}

// xattrsDiffer compares the extended attributes of two entries; it returns the first
// differing name ("" when they match).
func xattrsDiffer(a, b entryRef) (string, error) {
	ax, err := readXattrs(a)
	if err != nil {
		return "", err
	}
	bx, err := readXattrs(b)
	if err != nil {
		return "", err
	}
	var diff []string
	for n, v := range ax {
		if w, ok := bx[n]; !ok || !bytes.Equal(v, w) {
			diff = append(diff, n)
		}
	}
	for n := range bx {
		if _, ok := ax[n]; !ok {
			diff = append(diff, n)
		}
	}
	sort.Strings(diff)
	return strings.Join(diff, ","), nil
}

func olderThan(a, b unix.Timespec) bool {
	return a.Sec < b.Sec || a.Sec == b.Sec && a.Nsec < b.Nsec
}
