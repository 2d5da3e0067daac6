package sync

import (
	"bytes"
	"fmt"
	"hash/maphash"
	stdsync "sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// blockSize is the unit of the delta: a change rewrites whole blocks of this size.
	blockSize = 64 << 10
	// chunkSize is the share of one large file that one worker copies.
	chunkSize = 32 << 20
	// deltaMin is the size from which a changed file is patched in place, block by
	// block; smaller files are simply written anew (temporary name, then rename).
	deltaMin = 1 << 20
	// smallFile is the size up to which one read and one write beat copy_file_range,
	// which sets up a splice pipe per call on filesystems that cannot clone.
	smallFile = 64 << 10
)

// The block hashes only ever compare content within this process, so a seeded maphash
// (AES-based, several GB/s) is enough: nobody outside can aim at a collision.
var hashSeed = maphash.MakeSeed()

var zeroBlock = make([]byte, blockSize)

var bufPool = stdsync.Pool{New: func() any { b := make([]byte, blockSize); return &b }}

// fileSig is the state of a DST inode right after we last wrote it. If DST still shows
// the same signature, nobody else wrote it and our block hashes still describe it.
type fileSig struct {
	ino          uint64
	size         int64
	mtime, ctime unix.Timespec
}

func sigOf(st *unix.Stat_t) fileSig {
	return fileSig{ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// blockCache is what we last wrote to one DST file: a hash per block, so that a change
// in SRC is found by reading SRC alone, and only the differing blocks are written.
type blockCache struct {
	sig    fileSig
	hashes []uint64
}

// copyStats are the counters the copier feeds.
type copyStats struct {
	bytesWritten atomic.Int64 // data written at DST
	bytesRead    atomic.Int64 // data read from SRC (and DST when comparing)
	files        atomic.Int64 // regular files whose content was written
}

// fileCopier copies the content of regular files.
type fileCopier struct {
	w     *workers
	jobs  int
	stats *copyStats
	seq   atomic.Uint64 // temporary names
	maps  *mapCache     // kept mappings of SRC files (a follower's); nil: none used
}

// copyResult says what copying one file did.
type copyResult struct {
	cache   *blockCache // nil when none is kept
	changed bool        // content or metadata of DST changed
	stale   bool        // SRC changed while we copied it: copy again
}

// copyFile brings the regular file name (in srcDir, stat st) to dstDir. dstSt is the
// DST entry's stat, nil if there is none (an entry of another type has been removed by
// the caller). cache is what we know DST holds; keepCache asks for block hashes of the
// result. compare forces a content comparison even when size and mtime agree.
func (c *fileCopier) copyFile(srcDir, dstDir int, name string, st, dstSt *unix.Stat_t, cache *blockCache, keepCache, compare bool) (copyResult, error) {
	var res copyResult
	srcFD, err := openSrc(srcDir, name, openReadFlags)
	if err != nil {
		return res, &PathError{Op: "open", Err: err}
	}
	defer unix.Close(srcFD)
	var cur unix.Stat_t
	if err := unix.Fstat(srcFD, &cur); err != nil {
		return res, &PathError{Op: "stat", Err: err}
	}
	if cur.Mode&unix.S_IFMT != unix.S_IFREG {
		return copyResult{stale: true}, nil // replaced by something else meanwhile
	}
	*st = cur
	srcRef := entryRef{dirfd: srcDir, name: name, fd: srcFD}

	inPlace := dstSt != nil && (st.Size >= deltaMin || compare) && (dstSt.Nlink == 1 || dstSt.Nlink == st.Nlink)
	if inPlace && cache != nil && cache.sig != sigOf(dstSt) {
		cache = nil // somebody else wrote DST: compare against its real content
	}
	if inPlace && !compare && cache == nil && dstSt.Size < deltaMin {
		inPlace = false // nothing worth reading back: write it anew
	}
	var dstFD int
	var hashes []uint64
	if inPlace {
		dstFD, err = unix.Openat(dstDir, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return res, &PathError{Op: "open DST", Err: err}
		}
		defer unix.Close(dstFD)
		var sm *srcMapping
		if cache != nil && st.Size >= deltaMin && c.maps != nil {
			if sm = c.maps.get(srcFD, st); sm != nil {
				defer c.maps.release(sm)
			}
		}
		var wrote bool
		hashes, wrote, err = c.patch(srcFD, dstFD, st.Size, dstSt.Size, cache, sm)
		if err != nil {
			return res, err
		}
		res.changed = wrote
		metaChanged, err := applyMeta(st, srcRef, entryRef{dirfd: dstDir, name: name, fd: dstFD}, dstStIfUnchanged(dstFD, dstSt, wrote), true)
		if err != nil {
			return res, err
		}
		res.changed = res.changed || metaChanged
	} else {
		nf, err := c.newFile(dstDir, name, dstSt != nil)
		if err != nil {
			return res, err
		}
		dstFD = nf.fd
		defer nf.abort()
		if hashes, err = c.copyAll(srcFD, dstFD, st, keepCache && st.Size >= deltaMin); err != nil {
			return res, err
		}
		if _, err := applyMeta(st, srcRef, nf.ref(), nil, true); err != nil {
			return res, err
		}
		if err := nf.commit(); err != nil {
			return res, err
		}
		res.changed = true
	}
	if res.changed {
		c.stats.files.Add(1)
	}
	var after unix.Stat_t
	if err := unix.Fstat(srcFD, &after); err == nil && (after.Mtim != st.Mtim || after.Size != st.Size) {
		res.stale = true
	}
	if keepCache && hashes != nil && !res.stale {
		var dst unix.Stat_t
		if err := unix.Fstat(dstFD, &dst); err == nil {
			res.cache = &blockCache{sig: sigOf(&dst), hashes: hashes}
		}
	}
	return res, nil
}

// newFile is a DST file being written: it gets its name only when complete. Where the
// name is free and the filesystem can, it is an O_TMPFILE inode linked in at the end
// (no name at all meanwhile, and no rename); otherwise a temporary name renamed over.
type newFile struct {
	dirfd    int
	name     string
	tmp      string // "" for an O_TMPFILE
	fd       int
	finished bool
}

func (c *fileCopier) newFile(dirfd int, name string, replace bool) (*newFile, error) {
	nf := &newFile{dirfd: dirfd, name: name, fd: -1}
	if !replace {
		fd, err := unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err == nil {
			nf.fd = fd
			return nf, nil
		}
	}
	nf.tmp = tempName(name, c.seq.Add(1))
	fd, err := unix.Openat(dirfd, nf.tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, writeError("create", err)
	}
	nf.fd = fd
	return nf, nil
}

// ref names the file for applyMeta, which uses its descriptor.
func (nf *newFile) ref() entryRef {
	if nf.tmp == "" {
		return entryRef{dirfd: unix.AT_FDCWD, name: fdPath(nf.fd), fd: nf.fd}
	}
	return entryRef{dirfd: nf.dirfd, name: nf.tmp, fd: nf.fd}
}

// commit gives the finished file its name.
func (nf *newFile) commit() error {
	if nf.tmp == "" {
		err := unix.Linkat(nf.fd, "", nf.dirfd, nf.name, unix.AT_EMPTY_PATH)
		if err == unix.ENOENT || err == unix.EPERM { // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH
			err = unix.Linkat(unix.AT_FDCWD, fdPath(nf.fd), nf.dirfd, nf.name, unix.AT_SYMLINK_FOLLOW)
		}
		if err == unix.EEXIST { // made meanwhile: link under a temporary name, rename over
			nf.tmp = tempName(nf.name, uint64(nf.fd)<<32|uint64(time.Now().UnixNano()&0xffffffff))
			if err = unix.Linkat(nf.fd, "", nf.dirfd, nf.tmp, unix.AT_EMPTY_PATH); err == nil {
				err = unix.Renameat(nf.dirfd, nf.tmp, nf.dirfd, nf.name)
			}
		}
		if err != nil {
			return writeError("link into place", err)
		}
		nf.finished = true
		return nil
	}
	if err := unix.Renameat(nf.dirfd, nf.tmp, nf.dirfd, nf.name); err != nil {
		return writeError("rename into place", err)
	}
	nf.finished = true
	return nil
}

// abort closes the file and removes what is left of an unfinished one.
func (nf *newFile) abort() {
	unix.Close(nf.fd)
	if !nf.finished && nf.tmp != "" {
		_ = unix.Unlinkat(nf.dirfd, nf.tmp, 0)
	}
}

// dstStIfUnchanged returns DST's stat for applyMeta: the old one if we wrote nothing,
// else a fresh one (writing moved its mtime).
func dstStIfUnchanged(fd int, old *unix.Stat_t, wrote bool) *unix.Stat_t {
	if !wrote {
		return old
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return nil
	}
	return &st
}

// chunks splits [0, size) into pieces for the workers and runs f on each, in parallel
// when the file is large enough to be worth it.
func (c *fileCopier) chunks(size int64, f func(start, end int64) error) error {
	return c.chunksOf(size, chunkSize, f)
}

// chunksOf is chunks with pieces of a given size.
func (c *fileCopier) chunksOf(size, piece int64, f func(start, end int64) error) error {
	if size <= piece {
		return f(0, size)
	}
	var wg stdsync.WaitGroup
	var first firstError
	for start := int64(0); start < size; start += piece {
		end := min(start+piece, size)
		c.w.spawn(&wg, func() { first.set(f(start, end)) })
	}
	wg.Wait()
	return first.get()
}

// copyAll writes the whole content of srcFD into the empty file dstFD. Holes stay holes:
// only the data segments SEEK_DATA/SEEK_HOLE report are copied, after sizing DST. With
// wantHashes, data goes through our buffers so that we hash exactly what we write;
// otherwise copy_file_range lets the kernel copy (or reflink) it.
func (c *fileCopier) copyAll(srcFD, dstFD int, st *unix.Stat_t, wantHashes bool) ([]uint64, error) {
	size := st.Size
	// A file with as many blocks as bytes has no holes: no need to look for them.
	sparse := st.Blocks*512 < st.Size
	if sparse || wantHashes {
		if err := unix.Ftruncate(dstFD, size); err != nil {
			return nil, writeError("size", err)
		}
	}
	var hashes []uint64
	if wantHashes {
		hashes = make([]uint64, (size+blockSize-1)/blockSize)
	}
	// The kernel copies best in few long calls, and a filesystem serialises writes to
	// one file anyway: one piece per worker. Hashing is our CPU's work: small pieces.
	piece := int64(chunkSize)
	if !wantHashes {
		piece = max(piece, (size/int64(c.jobs)+blockSize)/blockSize*blockSize)
	}
	err := c.chunksOf(size, piece, func(start, end int64) error {
		if wantHashes {
			return c.hashCopy(srcFD, dstFD, start, end, hashes)
		}
		if !sparse && size <= smallFile {
			return c.copyRangeRW(srcFD, dstFD, start, end-start)
		}
		if !sparse {
			return c.copyRange(srcFD, dstFD, start, end-start)
		}
		return forEachData(srcFD, start, end, func(off, n int64) error {
			return c.copyRange(srcFD, dstFD, off, n)
		})
	})
	return hashes, err
}

// forEachData calls f for each data segment of [start, end) in fd. A filesystem without
// SEEK_DATA is all data.
func forEachData(fd int, start, end int64, f func(off, n int64) error) error {
	off := start
	for off < end {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole up to the end of the file
		}
		if err != nil {
			data = off
		}
		if data >= end {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		if err := f(data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// hashCopy copies [start, end) block by block through a buffer, hashing each block and
// leaving all-zero blocks unwritten (they read as zeros in the sized file: holes stay).
func (c *fileCopier) hashCopy(srcFD, dstFD int, start, end int64, hashes []uint64) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for off := start; off < end; off += blockSize {
		n := int(min(blockSize, end-off))
		buf := (*bp)[:n]
		h, err := c.readHashed(srcFD, buf, off)
		if err != nil {
			return err
		}
		hashes[off/blockSize] = h
		if bytes.Equal(buf, zeroBlock[:n]) {
			continue
		}
		if err := c.pwrite(dstFD, buf, off); err != nil {
			return err
		}
	}
	return nil
}

// copyRange copies [off, off+n) with copy_file_range, falling back to read/write where
// the kernel cannot (another filesystem type, an old kernel).
func (c *fileCopier) copyRange(srcFD, dstFD int, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		got, err := unix.CopyFileRange(srcFD, &roff, dstFD, &woff, int(min(n, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if isNoSpace(err) {
				return writeError("copy", err)
			}
			return c.copyRangeRW(srcFD, dstFD, roff, n)
		}
		if got == 0 {
			return nil // SRC shrank under us: the caller sees it and copies again
		}
		c.stats.bytesRead.Add(int64(got))
		c.stats.bytesWritten.Add(int64(got))
		n -= int64(got)
	}
	return nil
}

func (c *fileCopier) copyRangeRW(srcFD, dstFD int, off, n int64) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for n > 0 {
		buf := (*bp)[:min(int64(len(*bp)), n)]
		got, err := unix.Pread(srcFD, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &PathError{Op: "read", Err: err}
		}
		if got == 0 {
			return nil
		}
		c.stats.bytesRead.Add(int64(got))
		if err := c.pwrite(dstFD, buf[:got], off); err != nil {
			return err
		}
		off += int64(got)
		n -= int64(got)
	}
	return nil
}

// patch brings the existing DST file (dstFD, oldSize bytes) to SRC's content, writing
// only the blocks that differ. With a cache, a block differs when its hash does (DST is
// not read); without, DST's block is read and compared. With a mapping of SRC (sm, only
// given along with a cache), SRC is hashed where it is mapped instead of being read.
// It returns the new hashes and whether anything was written.
func (c *fileCopier) patch(srcFD, dstFD int, size, oldSize int64, cache *blockCache, sm *srcMapping) ([]uint64, bool, error) {
	hashes := make([]uint64, (size+blockSize-1)/blockSize)
	var wrote atomic.Bool
	var err error
	if sm != nil && cache != nil {
		err = c.chunksOf(size, mapPiece, func(start, end int64) error {
			faulted, err := withFaults(func() error {
				return c.patchMapped(sm.data, dstFD, start, end, oldSize, cache, hashes, &wrote)
			})
			if faulted { // SRC shrank under the mapping: read what is left of it
				return c.patchRead(srcFD, dstFD, start, end, oldSize, cache, hashes, &wrote)
			}
			return err
		})
	} else {
		err = c.chunks(size, func(start, end int64) error {
			return c.patchRead(srcFD, dstFD, start, end, oldSize, cache, hashes, &wrote)
		})
	}
	if err != nil {
		return nil, false, err
	}
	if size != oldSize {
		if err := unix.Ftruncate(dstFD, size); err != nil {
			return nil, false, writeError("truncate", err)
		}
		wrote.Store(true)
	}
	return hashes, wrote.Load(), nil
}

// patchRead is patch's work on the blocks of [start, end), reading SRC.
func (c *fileCopier) patchRead(srcFD, dstFD int, start, end, oldSize int64, cache *blockCache, hashes []uint64, wrote *atomic.Bool) error {
	sp := bufPool.Get().(*[]byte)
	dp := bufPool.Get().(*[]byte)
	defer bufPool.Put(sp)
	defer bufPool.Put(dp)
	for off := start; off < end; off += blockSize {
		n := int(min(blockSize, end-off))
		buf := (*sp)[:n]
		h, err := c.readHashed(srcFD, buf, off)
		if err != nil {
			return err
		}
		i := off / blockSize
		hashes[i] = h
		oldN := min(int64(n), max(0, oldSize-off)) // DST's bytes in this block
		var same bool
		switch {
		case oldN != int64(n):
			same = false
		case cache != nil:
			same = int(i) < len(cache.hashes) && cache.hashes[i] == h
		default:
			old := (*dp)[:n]
			if err := readFull(dstFD, old, off); err != nil {
				return err
			}
			c.stats.bytesRead.Add(int64(n))
			same = bytes.Equal(old, buf)
		}
		if same {
			continue
		}
		if err := c.pwrite(dstFD, buf, off); err != nil {
			return err
		}
		wrote.Store(true)
	}
	return nil
}

// patchMapped is patch's work on the blocks of [start, end) against the cache, hashing
// SRC where src maps it. A block that differs is copied out first and hashed again as
// copied: SRC may change meanwhile, and the hash kept must be that of what DST holds.
// It faults (see withFaults) if SRC shrinks below end meanwhile.
func (c *fileCopier) patchMapped(src []byte, dstFD int, start, end, oldSize int64, cache *blockCache, hashes []uint64, wrote *atomic.Bool) error {
	var bp *[]byte
	defer func() {
		if bp != nil {
			bufPool.Put(bp)
		}
	}()
	for off := start; off < end; off += blockSize {
		n := min(blockSize, end-off)
		h := maphash.Bytes(hashSeed, src[off:off+n])
		c.stats.bytesRead.Add(n)
		i := off / blockSize
		oldN := min(n, max(0, oldSize-off)) // DST's bytes in this block
		if oldN == n && int(i) < len(cache.hashes) && cache.hashes[i] == h {
			hashes[i] = h
			continue
		}
		if bp == nil {
			bp = bufPool.Get().(*[]byte)
		}
		buf := (*bp)[:n]
		copy(buf, src[off:off+n])
		hashes[i] = maphash.Bytes(hashSeed, buf)
		if err := c.pwrite(dstFD, buf, off); err != nil {
			return err
		}
		wrote.Store(true)
	}
	return nil
}

// readHashed fills buf from SRC at off and returns its hash.
func (c *fileCopier) readHashed(fd int, buf []byte, off int64) (uint64, error) {
	if err := readFull(fd, buf, off); err != nil {
		return 0, err
	}
	c.stats.bytesRead.Add(int64(len(buf)))
	return maphash.Bytes(hashSeed, buf), nil
}

// readFull reads len(buf) bytes at off; past the end of the file (SRC shrank) the rest
// is zeros, and the change that shrank it will have us copy again.
func readFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pread(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &PathError{Op: "read", Err: err}
		}
		if n == 0 {
			clear(buf)
			return nil
		}
		buf = buf[n:]
		off += int64(n)
	}
	return nil
}

func (c *fileCopier) pwrite(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pwrite(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return writeError("write", err)
		}
		c.stats.bytesWritten.Add(int64(n))
		buf = buf[n:]
		off += int64(n)
	}
	return nil
}

// writeError wraps a failed write at DST; a full DST becomes ErrNoSpace, which stops the
// mirror instead of being reported for one path.
func writeError(op string, err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: %s: %w", ErrNoSpace, op, err)
	}
	return &PathError{Op: op, Err: err}
}
