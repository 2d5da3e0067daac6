package sync

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sort"
	stdsync "sync"

	"golang.org/x/sys/unix"
)

// Difference is one way in which DST is not a copy of SRC.
type Difference struct {
	Path string `json:"path"` // relative to the roots; "." is the roots themselves
	What string `json:"what"` // missing, extra, type, mode, owner, mtime, size, content, xattrs, target, device, hardlink, error
	Src  string `json:"src,omitempty"`
	Dst  string `json:"dst,omitempty"`
}

func (d Difference) String() string {
	if d.Src == "" && d.Dst == "" {
		return fmt.Sprintf("%s: %s", d.Path, d.What)
	}
	return fmt.Sprintf("%s: %s differs (SRC %s, DST %s)", d.Path, d.What, d.Src, d.Dst)
}

// Verify compares the trees src and dst completely (every entry's type, mode, owner,
// nanosecond mtime, size, content, xattrs, symlink target, device number, and which
// names are hardlinks of each other) and lists every difference, sorted by path. Access
// times are not compared: reading DST's files is enough to change them. Neither tree is
// written; SRC's files are read with O_NOATIME.
func Verify(ctx context.Context, src, dst string) ([]Difference, error) {
	cfg, err := Options{Src: src, Dst: dst}.resolve(true)
	if err != nil {
		return nil, err
	}
	srcFD, err := openSrc(unix.AT_FDCWD, cfg.src, openDirFlags)
	if err != nil {
		return nil, fmt.Errorf("open SRC %s: %w", cfg.src, err)
	}
	defer unix.Close(srcFD)
	dstFD, err := openSrc(unix.AT_FDCWD, cfg.dst, openDirFlags)
	if err != nil {
		return nil, &InputError{Path: dst, Reason: fmt.Sprintf("cannot open DST: %v", err)}
	}
	defer unix.Close(dstFD)
	v := &verifier{
		t:       newTree(cfg, srcFD, dstFD),
		ctx:     ctx,
		srcLink: map[fileID]fileID{},
		dstLink: map[fileID]fileID{},
	}
	v.t.w = newWorkers(runtime.NumCPU())
	root := v.t.rootRef()
	v.compareEntry(root, ".", root.src, root.dst, nil, nil)
	v.dir(root)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.Slice(v.diffs, func(i, j int) bool {
		if v.diffs[i].Path != v.diffs[j].Path {
			return v.diffs[i].Path < v.diffs[j].Path
		}
		return v.diffs[i].What < v.diffs[j].What
	})
	return v.diffs, nil
}

type verifier struct {
	t   *tree
	ctx context.Context

	mu      stdsync.Mutex
	diffs   []Difference
	srcLink map[fileID]fileID // SRC inode with several names -> DST inode of the first
	dstLink map[fileID]fileID // and the other way round
}

func (v *verifier) add(rel, what, src, dst string) {
	v.mu.Lock()
	v.diffs = append(v.diffs, Difference{Path: rel, What: what, Src: src, Dst: dst})
	v.mu.Unlock()
}

func (v *verifier) dir(d dirRef) {
	if v.ctx.Err() != nil {
		return
	}
	srcNames, err := readDirNames(d.srcFD)
	if err != nil {
		v.add(d.rel, "error", err.Error(), "")
		return
	}
	dstNames, err := readDirNames(d.dstFD)
	if err != nil {
		v.add(d.rel, "error", "", err.Error())
		return
	}
	inDst := make(map[string]bool, len(dstNames))
	for _, n := range dstNames {
		inDst[n] = true
	}
	var wg stdsync.WaitGroup
	for _, n := range srcNames {
		if !inDst[n] {
			v.add(joinRel(d.rel, n), "missing", "", "")
			continue
		}
		delete(inDst, n)
		v.t.w.spawn(&wg, func() { v.child(d, n) })
	}
	for n := range inDst {
		v.add(joinRel(d.rel, n), "extra", "", "")
	}
	wg.Wait()
}

func (v *verifier) child(d dirRef, name string) {
	rel := joinRel(d.rel, name)
	var ss, ds unix.Stat_t
	if err := lstatAt(d.srcFD, name, &ss); err != nil {
		v.add(rel, "error", err.Error(), "")
		return
	}
	if err := lstatAt(d.dstFD, name, &ds); err != nil {
		if err == unix.ENOENT {
			v.add(rel, "missing", "", "")
		} else {
			v.add(rel, "error", "", err.Error())
		}
		return
	}
	src := entryRef{dirfd: d.srcFD, name: name, fd: -1}
	dst := entryRef{dirfd: d.dstFD, name: name, fd: -1}
	if !v.compareEntry(d, rel, src, dst, &ss, &ds) {
		return
	}
	if ss.Mode&unix.S_IFMT != unix.S_IFDIR {
		return
	}
	sub := dirRef{rel: rel, srcFD: -1, dstFD: -1}
	var err error
	if sub.srcFD, err = openSrc(d.srcFD, name, openDirFlags); err != nil {
		v.add(rel, "error", err.Error(), "")
		return
	}
	if sub.dstFD, err = openSrc(d.dstFD, name, openDirFlags); err != nil {
		unix.Close(sub.srcFD)
		v.add(rel, "error", "", err.Error())
		return
	}
	defer sub.close(v.t)
	v.dir(sub)
}

// compareEntry compares one entry's metadata and content; it reports whether both are
// of the same type (so that a directory is worth descending into). ss and ds may be nil
// for the roots, which are then stat'ed through their descriptors.
func (v *verifier) compareEntry(d dirRef, rel string, src, dst entryRef, ss, ds *unix.Stat_t) bool {
	if ss == nil {
		ss, ds = new(unix.Stat_t), new(unix.Stat_t)
		if err := unix.Fstat(src.fd, ss); err != nil {
			v.add(rel, "error", err.Error(), "")
			return false
		}
		if err := unix.Fstat(dst.fd, ds); err != nil {
			v.add(rel, "error", "", err.Error())
			return false
		}
	}
	kind := ss.Mode & unix.S_IFMT
	if kind != ds.Mode&unix.S_IFMT {
		v.add(rel, "type", kindName(ss.Mode), kindName(ds.Mode))
		return false
	}
	if kind != unix.S_IFLNK && ss.Mode&07777 != ds.Mode&07777 {
		v.add(rel, "mode", fmt.Sprintf("%04o", ss.Mode&07777), fmt.Sprintf("%04o", ds.Mode&07777))
	}
	if ss.Uid != ds.Uid || ss.Gid != ds.Gid {
		v.add(rel, "owner", fmt.Sprintf("%d:%d", ss.Uid, ss.Gid), fmt.Sprintf("%d:%d", ds.Uid, ds.Gid))
	}
	if ss.Mtim != ds.Mtim {
		v.add(rel, "mtime", fmtTime(ss.Mtim), fmtTime(ds.Mtim))
	}
	if names, err := xattrsDiffer(src, dst); err != nil {
		v.add(rel, "error", "xattrs: "+err.Error(), "")
	} else if names != "" {
		v.add(rel, "xattrs", names, "")
	}
	switch kind {
	case unix.S_IFREG:
		v.compareLinks(rel, ss, ds)
		if ss.Size != ds.Size {
			v.add(rel, "size", fmt.Sprint(ss.Size), fmt.Sprint(ds.Size))
			return true
		}
		if off, err := v.compareContent(d, src.name, ss.Size); err != nil {
			v.add(rel, "error", err.Error(), "")
		} else if off >= 0 {
			v.add(rel, "content", fmt.Sprintf("from byte %d", off), "")
		}
	case unix.S_IFLNK:
		st, err1 := readlinkAt(d.srcFD, src.name)
		dt, err2 := readlinkAt(d.dstFD, dst.name)
		if err1 != nil || err2 != nil || st != dt {
			v.add(rel, "target", st, dt)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if ss.Rdev != ds.Rdev {
			v.add(rel, "device", fmt.Sprintf("%d:%d", unix.Major(ss.Rdev), unix.Minor(ss.Rdev)),
				fmt.Sprintf("%d:%d", unix.Major(ds.Rdev), unix.Minor(ds.Rdev)))
		}
	}
	return true
}

// compareLinks checks that names sharing an inode in SRC share one in DST, and the
// other way round.
func (v *verifier) compareLinks(rel string, ss, ds *unix.Stat_t) {
	if ss.Nlink <= 1 && ds.Nlink <= 1 {
		return
	}
	sid, did := idOf(ss), idOf(ds)
	v.mu.Lock()
	defer v.mu.Unlock()
	if want, ok := v.srcLink[sid]; ok && want != did {
		v.diffs = append(v.diffs, Difference{Path: rel, What: "hardlink", Src: "linked", Dst: "not linked to the same file"})
		return
	} else if !ok {
		v.srcLink[sid] = did
	}
	if want, ok := v.dstLink[did]; ok && want != sid {
		v.diffs = append(v.diffs, Difference{Path: rel, What: "hardlink", Src: "not linked", Dst: "linked to another file"})
	} else if !ok {
		v.dstLink[did] = sid
	}
}

// compareContent returns the offset of the first differing block, or -1.
func (v *verifier) compareContent(d dirRef, name string, size int64) (int64, error) {
	sfd, err := openSrc(d.srcFD, name, openReadFlags)
	if err != nil {
		return 0, err
	}
	defer unix.Close(sfd)
	dfd, err := openSrc(d.dstFD, name, openReadFlags)
	if err != nil {
		return 0, err
	}
	defer unix.Close(dfd)
	first := int64(-1)
	var mu stdsync.Mutex
	err = v.t.copier.chunks(size, func(start, end int64) error {
		a, b := bufPool.Get().(*[]byte), bufPool.Get().(*[]byte)
		defer bufPool.Put(a)
		defer bufPool.Put(b)
		for off := start; off < end; off += blockSize {
			n := int(min(blockSize, end-off))
			if err := readFull(sfd, (*a)[:n], off); err != nil {
				return err
			}
			if err := readFull(dfd, (*b)[:n], off); err != nil {
				return err
			}
			if !bytes.Equal((*a)[:n], (*b)[:n]) {
				mu.Lock()
				if first < 0 || off < first {
					first = off
				}
				mu.Unlock()
				return nil
			}
		}
		return nil
	})
	return first, err
}

func kindName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("type %o", mode&unix.S_IFMT)
}

func fmtTime(ts unix.Timespec) string { return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec) }
