package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	stdsync "sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// counters are the mirror's running totals.
type counters struct {
	copyStats
	entries   atomic.Int64 // entries looked at
	metaOnly  atomic.Int64 // entries whose metadata alone was fixed
	created   atomic.Int64 // directories, symlinks and special files made
	deleted   atomic.Int64 // entries removed at DST
	renamed   atomic.Int64 // renames replayed at DST
	linked    atomic.Int64 // hardlinks made at DST
	problems  atomic.Int64 // per-path problems
	passes    atomic.Int64 // full passes (the first, plus rescans)
	overflows atomic.Int64 // inotify queue overflows
}

// tree is what every pass over one SRC/DST pair shares.
type tree struct {
	cfg              *config
	srcRoot, dstRoot int
	w                *workers
	stats            *counters
	copier           *fileCopier
	idx              *index // nil unless following

	// watchDir, when following, is called with each SRC directory (open as srcFD)
	// before it is listed, so that nothing created in it after the listing is missed.
	watchDir func(rel string, srcFD int) error

	problemsMu stdsync.Mutex
	problems   []PathError // the last few, for the report
}

const keepProblems = 1000

func newTree(cfg *config, srcRoot, dstRoot int) *tree {
	t := &tree{cfg: cfg, srcRoot: srcRoot, dstRoot: dstRoot, w: newWorkers(cfg.jobs), stats: &counters{}}
	t.copier = &fileCopier{w: t.w, jobs: cfg.jobs, stats: &t.stats.copyStats}
	return t
}

// pass is one walk (the first pass, a rescan, or the follow's work on a batch of paths).
type pass struct {
	*tree
	ctx     context.Context
	compare bool // compare content even when size and mtime agree
	// thorough compares xattrs of every entry; otherwise an entry whose SRC ctime is
	// older than DST's is taken as unchanged (see applyMeta). A follower's batches are
	// thorough: a rename or a link it replays moves DST's ctime without copying
	// anything. A pass is not, except for what it has touched itself.
	thorough bool
	fatal    firstError

	linksMu stdsync.Mutex
	links   map[fileID]*linkClaim
}

// linkClaim makes the names of one SRC inode (hardlinks) one inode at DST: the first
// name found is copied, the others wait for it and link to it.
type linkClaim struct {
	done   chan struct{}
	dstRel string // where the content went; "" if copying failed
}

func (t *tree) newPass(ctx context.Context, compare, thorough bool) *pass {
	return &pass{tree: t, ctx: ctx, compare: compare, thorough: thorough || compare || t.cfg.checksum,
		links: map[fileID]*linkClaim{}}
}

func (p *pass) stopped() bool { return p.ctx.Err() != nil || p.fatal.get() != nil }

// err is what ended the pass early, if anything.
func (p *pass) err() error {
	if err := p.fatal.get(); err != nil {
		return err
	}
	return p.ctx.Err()
}

// problem records what went wrong with rel. A full DST stops the pass; a path that
// vanished meanwhile is no problem (its removal is a change like any other); anything
// else is reported for that path and the pass goes on.
func (p *pass) problem(rel string, err error) {
	if err == nil {
		return
	}
	if errors.Is(err, ErrNoSpace) || isNoSpace(err) {
		if !errors.Is(err, ErrNoSpace) {
			err = fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
		p.fatal.set(fmt.Errorf("%s: %w", rel, err))
		return
	}
	if errors.Is(err, unix.ENOENT) {
		return
	}
	pe := PathError{Path: rel, Op: "sync", Err: err}
	var inner *PathError
	if errors.As(err, &inner) {
		pe.Op, pe.Err = inner.Op, inner.Err
	}
	p.stats.problems.Add(1)
	p.cfg.log.Warn("cannot mirror path", "path", rel, "op", pe.Op, "err", pe.Err)
	p.problemsMu.Lock()
	if len(p.problems) >= keepProblems {
		p.problems = p.problems[1:]
	}
	p.problems = append(p.problems, pe)
	p.problemsMu.Unlock()
}

// dirRef is one directory being synced: its descriptors on both sides and how to name
// it to the *at calls (the parent's descriptor and its name, or an absolute path for
// the roots).
type dirRef struct {
	rel          string
	srcFD, dstFD int
	src, dst     entryRef
	// dstCtime is DST's ctime before this pass changed anything inside (nil: unknown,
	// or a directory we just made), for applyMeta's ctime rule.
	dstCtime *unix.Timespec
}

func (t *tree) rootRef() dirRef {
	return dirRef{
		rel: ".", srcFD: t.srcRoot, dstFD: t.dstRoot,
		src: entryRef{dirfd: unix.AT_FDCWD, name: t.cfg.src, fd: t.srcRoot},
		dst: entryRef{dirfd: unix.AT_FDCWD, name: t.cfg.dst, fd: t.dstRoot},
	}
}

// openDirPair opens the directory rel on both sides, without following symlinks.
func (t *tree) openDirPair(rel string) (dirRef, error) {
	if rel == "." {
		return t.rootRef(), nil
	}
	d := dirRef{rel: rel, srcFD: -1, dstFD: -1}
	var err error
	if d.srcFD, err = openDirBeneath(t.srcRoot, rel, true); err != nil {
		return d, err
	}
	if d.dstFD, err = openDirBeneath(t.dstRoot, rel, false); err != nil {
		unix.Close(d.srcFD)
		return d, err
	}
	// Naming a directory by its own descriptor and "" is not possible for every call,
	// so the metadata calls go through the descriptor's /proc path.
	d.src = entryRef{dirfd: unix.AT_FDCWD, name: procPath(d.srcFD, "."), fd: d.srcFD}
	d.dst = entryRef{dirfd: unix.AT_FDCWD, name: procPath(d.dstFD, "."), fd: d.dstFD}
	return d, nil
}

func (d dirRef) close(t *tree) {
	if d.srcFD >= 0 && d.srcFD != t.srcRoot {
		unix.Close(d.srcFD)
	}
	if d.dstFD >= 0 && d.dstFD != t.dstRoot {
		unix.Close(d.dstFD)
	}
}

// entryBatch is how many names of one directory one worker takes at a time. Workers
// in the same directory contend for its lock (every create and rename takes it), so
// directories are what runs in parallel; only large directories are split.
const entryBatch = 512

// syncDir makes DST's directory d match SRC's, everything below it included, and then
// gives it SRC's metadata (last, since every change inside moves its mtime).
func (p *pass) syncDir(d dirRef) {
	if p.stopped() {
		return
	}
	if p.watchDir != nil {
		if err := p.watchDir(d.rel, d.srcFD); err != nil {
			var wl *WatchLimitError
			if errors.As(err, &wl) {
				p.fatal.set(err)
				return
			}
			p.problem(d.rel, err)
		}
	}
	srcEnts, err := readDir(d.srcFD)
	if err != nil {
		p.problem(d.rel, &PathError{Op: "list", Err: err})
		return
	}
	dstNames, err := readDirNames(d.dstFD)
	if err != nil {
		p.problem(d.rel, &PathError{Op: "list DST", Err: err})
		return
	}
	inSrc := make(map[string]struct{}, len(srcEnts))
	for _, e := range srcEnts {
		inSrc[e.name] = struct{}{}
	}
	// Removals first: they free the space and the names the copies may need.
	inDst := make(map[string]bool, len(dstNames))
	for _, n := range dstNames {
		if _, ok := inSrc[n]; !ok {
			p.removeExtra(d.dstFD, joinRel(d.rel, n), n)
		} else {
			inDst[n] = true
		}
	}
	sort.Slice(srcEnts, func(i, j int) bool { return srcEnts[i].name < srcEnts[j].name })
	// Each subdirectory is a task of its own; other entries go in batches.
	var wg stdsync.WaitGroup
	var batch []string
	run := func(names []string) {
		p.w.spawn(&wg, func() {
			for _, n := range names {
				if p.stopped() {
					return
				}
				p.syncEntry(d, n, inDst[n])
			}
		})
	}
	for _, e := range srcEnts {
		if e.dtype == unix.DT_DIR {
			run([]string{e.name})
			continue
		}
		batch = append(batch, e.name)
		if len(batch) == entryBatch {
			run(batch)
			batch = nil
		}
	}
	if len(batch) > 0 {
		run(batch)
	}
	wg.Wait()
	if p.stopped() {
		return
	}
	p.problem(d.rel, p.syncDirMeta(d))
}

// syncDirMeta copies a directory's own metadata, from descriptors already open.
func (p *pass) syncDirMeta(d dirRef) error {
	var st, dst unix.Stat_t
	if err := unix.Fstat(d.srcFD, &st); err != nil {
		return err
	}
	if err := unix.Fstat(d.dstFD, &dst); err != nil {
		return err
	}
	thorough := p.thorough || d.dstCtime == nil
	if !thorough {
		dst.Ctim = *d.dstCtime // what we made inside moved it, not a copy of metadata
	}
	changed, err := applyMeta(&st, d.src, d.dst, &dst, thorough)
	if changed {
		p.stats.metaOnly.Add(1)
	}
	return err
}

// removeExtra removes DST's entry name (rel) that SRC does not have, unless deleting is
// off or the entry is excluded (excluded entries at DST are kept, as rsync does).
func (p *pass) removeExtra(dstDir int, rel, name string) {
	if !p.cfg.delete {
		return
	}
	if p.cfg.excl != nil && len(p.cfg.excl.rules) > 0 {
		var st unix.Stat_t
		if lstatAt(dstDir, name, &st) == nil && p.cfg.excl.excluded(rel, st.Mode&unix.S_IFMT == unix.S_IFDIR) {
			return
		}
	}
	if err := removeAllAt(dstDir, name); err != nil {
		p.problem(rel, &PathError{Op: "remove", Err: err})
		return
	}
	p.idx.remove(rel)
	p.stats.deleted.Add(1)
}

// syncEntry mirrors the entry name of directory d; dstHas says whether DST's listing
// had the name (when it did not, DST need not be asked: only we write there).
func (p *pass) syncEntry(d dirRef, name string, dstHas bool) {
	rel := joinRel(d.rel, name)
	p.stats.entries.Add(1)
	var st unix.Stat_t
	if err := lstatAt(d.srcFD, name, &st); err != nil {
		if err == unix.ENOENT {
			p.removeExtra(d.dstFD, rel, name) // gone since the listing
		} else {
			p.problem(rel, &PathError{Op: "stat", Err: err})
		}
		return
	}
	kind := st.Mode & unix.S_IFMT
	if p.cfg.excl.excluded(rel, kind == unix.S_IFDIR) {
		return
	}
	p.problem(rel, p.syncOneKnown(d, name, rel, &st, dstHas))
}

// syncOne mirrors one entry whose SRC stat is st.
func (p *pass) syncOne(d dirRef, name, rel string, st *unix.Stat_t) error {
	return p.syncOneKnown(d, name, rel, st, true)
}

// syncOneKnown is syncOne when we know whether DST may have the name.
func (p *pass) syncOneKnown(d dirRef, name, rel string, st *unix.Stat_t, dstMayHave bool) error {
	kind := st.Mode & unix.S_IFMT
	var dst unix.Stat_t
	var dstSt *unix.Stat_t
	if dstMayHave {
		dstSt = &dst
		if err := lstatAt(d.dstFD, name, &dst); err == unix.ENOENT {
			dstSt = nil
		} else if err != nil {
			return &PathError{Op: "stat DST", Err: err}
		}
	}
	if dstSt != nil && dstSt.Mode&unix.S_IFMT != kind {
		if err := removeAllAt(d.dstFD, name); err != nil {
			return writeError("replace", err)
		}
		p.idx.remove(rel)
		dstSt = nil
	}
	srcRef := entryRef{dirfd: d.srcFD, name: name, fd: -1}
	dstRef := entryRef{dirfd: d.dstFD, name: name, fd: -1}
	switch kind {
	case unix.S_IFDIR:
		return p.syncSubdir(d, name, rel, st, dstSt)
	case unix.S_IFREG:
		return p.syncFile(d, name, rel, st, dstSt)
	case unix.S_IFLNK:
		target, err := readlinkAt(d.srcFD, name)
		if err != nil {
			return &PathError{Op: "readlink", Err: err}
		}
		if dstSt != nil {
			if cur, err := readlinkAt(d.dstFD, name); err == nil && cur == target {
				return p.fixMeta(rel, st, srcRef, dstRef, dstSt)
			}
		}
		return p.createAndMove(d, name, rel, st, func(tmp string) error {
			return unix.Symlinkat(target, d.dstFD, tmp)
		})
	default: // fifo, socket, character or block device
		if dstSt != nil && dstSt.Rdev == st.Rdev {
			return p.fixMeta(rel, st, srcRef, dstRef, dstSt)
		}
		return p.createAndMove(d, name, rel, st, func(tmp string) error {
			return unix.Mknodat(d.dstFD, tmp, kind|0o600, int(st.Rdev))
		})
	}
}

// fixMeta brings an entry whose content is right to SRC's metadata.
func (p *pass) fixMeta(rel string, st *unix.Stat_t, src, dst entryRef, dstSt *unix.Stat_t) error {
	// A hardlink's ctime moves when one of its names is linked: no ctime rule then.
	changed, err := applyMeta(st, src, dst, dstSt, p.thorough || st.Nlink > 1)
	if changed {
		p.stats.metaOnly.Add(1)
	}
	if err == nil {
		p.idx.set(rel, idOf(st), false, nil)
	}
	return err
}

// createAndMove makes a new non-regular entry under a temporary name, gives it its
// metadata, and renames it into place: it appears complete or not at all.
func (p *pass) createAndMove(d dirRef, name, rel string, st *unix.Stat_t, create func(tmp string) error) error {
	tmp := tempName(name, p.copier.seq.Add(1))
	if err := create(tmp); err != nil {
		return writeError("create", err)
	}
	if _, err := applyMeta(st, entryRef{dirfd: d.srcFD, name: name, fd: -1}, entryRef{dirfd: d.dstFD, name: tmp, fd: -1}, nil, true); err != nil {
		_ = unix.Unlinkat(d.dstFD, tmp, 0)
		return err
	}
	if err := unix.Renameat(d.dstFD, tmp, d.dstFD, name); err != nil {
		_ = unix.Unlinkat(d.dstFD, tmp, 0)
		return writeError("rename into place", err)
	}
	p.stats.created.Add(1)
	p.idx.set(rel, idOf(st), false, nil)
	return nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// syncSubdir mirrors a directory entry and everything below it.
func (p *pass) syncSubdir(d dirRef, name, rel string, st, dstSt *unix.Stat_t) error {
	if dstSt == nil {
		if err := unix.Mkdirat(d.dstFD, name, 0o700); err != nil && err != unix.EEXIST {
			return writeError("mkdir", err)
		}
		p.stats.created.Add(1)
	}
	sub := dirRef{rel: rel, srcFD: -1, dstFD: -1}
	var err error
	if sub.srcFD, err = openSrc(d.srcFD, name, openDirFlags); err != nil {
		return &PathError{Op: "open dir", Err: err}
	}
	if sub.dstFD, err = unix.Openat(d.dstFD, name, openDirFlags, 0); err != nil {
		unix.Close(sub.srcFD)
		return &PathError{Op: "open DST dir", Err: err}
	}
	defer sub.close(p.tree)
	sub.src = entryRef{dirfd: d.srcFD, name: name, fd: sub.srcFD}
	sub.dst = entryRef{dirfd: d.dstFD, name: name, fd: sub.dstFD}
	if dstSt != nil {
		sub.dstCtime = &dstSt.Ctim
	}
	p.idx.set(rel, idOf(st), true, nil)
	p.syncDir(sub)
	return nil
}

// syncFile mirrors a regular file: hardlinks become links, unchanged files (same size
// and mtime, unless comparing content) only get their metadata checked.
func (p *pass) syncFile(d dirRef, name, rel string, st, dstSt *unix.Stat_t) error {
	var claim *linkClaim
	if st.Nlink > 1 {
		var leader bool
		claim, leader = p.claimLink(idOf(st))
		if !leader {
			<-claim.done
			if claim.dstRel != "" && claim.dstRel != rel {
				return p.linkTo(d, name, rel, st, claim.dstRel, dstSt)
			}
			claim = nil // the first copy failed: copy this one on its own
		} else {
			defer close(claim.done)
		}
	}
	if claim != nil && dstSt == nil && p.idx != nil {
		// A new name of an inode DST already has (a new hardlink): link it.
		for _, other := range p.idx.pathsOf(idOf(st)) {
			if other == rel || !p.srcHas(other, idOf(st)) {
				continue
			}
			if p.linkTo(d, name, rel, st, other, nil) == nil {
				var now unix.Stat_t
				if lstatAt(d.dstFD, name, &now) == nil {
					dstSt = &now
				}
			}
			break
		}
	}
	var cache *blockCache
	if e, ok := p.idx.get(rel); ok && e.id == idOf(st) {
		cache = e.cache
	}
	srcRef := entryRef{dirfd: d.srcFD, name: name, fd: -1}
	dstRef := entryRef{dirfd: d.dstFD, name: name, fd: -1}
	if dstSt != nil && !p.compare && !p.cfg.checksum && dstSt.Size == st.Size && dstSt.Mtim == st.Mtim {
		if err := p.fixMeta(rel, st, srcRef, dstRef, dstSt); err != nil {
			return err
		}
		if cache != nil {
			var now unix.Stat_t
			if lstatAt(d.dstFD, name, &now) == nil {
				p.idx.set(rel, idOf(st), false, &blockCache{sig: sigOf(&now), hashes: cache.hashes})
			}
		}
		if claim != nil {
			claim.dstRel = rel
		}
		return nil
	}
	keepCache := p.idx != nil
	var res copyResult
	var err error
	for try := 0; ; try++ {
		res, err = p.copier.copyFile(d.srcFD, d.dstFD, name, st, dstSt, cache, keepCache, p.compare || p.cfg.checksum)
		// A file being written while we copy is copied again, a few times; a follower
		// also gets an event for the write, so it need not insist.
		if err != nil || !res.stale || try == 2 || p.idx != nil || p.stopped() {
			break
		}
		dstSt, cache = nil, nil
		var now unix.Stat_t
		if lstatAt(d.dstFD, name, &now) == nil {
			dstSt = &now
		}
	}
	if err != nil {
		return err
	}
	p.idx.set(rel, idOf(st), false, res.cache)
	if claim != nil {
		claim.dstRel = rel
	}
	return nil
}

// srcHas tells whether SRC's rel is (still) the inode id.
func (t *tree) srcHas(rel string, id fileID) bool {
	parent, name := splitRel(rel)
	fd, err := openDirBeneath(t.srcRoot, parent, true)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	return lstatAt(fd, name, &st) == nil && idOf(&st) == id
}

func (p *pass) claimLink(id fileID) (*linkClaim, bool) {
	p.linksMu.Lock()
	defer p.linksMu.Unlock()
	if c, ok := p.links[id]; ok {
		return c, false
	}
	c := &linkClaim{done: make(chan struct{})}
	p.links[id] = c
	return c, true
}

// linkTo makes DST's name (in d) a hardlink of DST's target, unless it already is.
func (p *pass) linkTo(d dirRef, name, rel string, st *unix.Stat_t, target string, dstSt *unix.Stat_t) error {
	tdir, tname := splitRel(target)
	tfd, err := openDirBeneath(p.dstRoot, tdir, false)
	if err != nil {
		return &PathError{Op: "open link target dir", Err: err}
	}
	defer unix.Close(tfd)
	var tst unix.Stat_t
	if err := lstatAt(tfd, tname, &tst); err != nil {
		return &PathError{Op: "stat link target", Err: err}
	}
	if dstSt != nil && dstSt.Ino == tst.Ino && dstSt.Dev == tst.Dev {
		p.idx.set(rel, idOf(st), false, nil)
		return nil
	}
	tmp := tempName(name, p.copier.seq.Add(1))
	if err := unix.Linkat(tfd, tname, d.dstFD, tmp, 0); err != nil {
		return writeError("link", err)
	}
	err = unix.Renameat(d.dstFD, tmp, d.dstFD, name)
	// rename(2) of two names of one inode does nothing and succeeds: the temporary
	// name must go in any case.
	_ = unix.Unlinkat(d.dstFD, tmp, 0)
	if err != nil {
		return writeError("rename link into place", err)
	}
	p.stats.linked.Add(1)
	p.idx.set(rel, idOf(st), false, nil)
	return nil
}

// run walks the whole tree: the first pass, and the rescan after an overflow.
func (p *pass) run() error {
	p.stats.passes.Add(1)
	root := p.rootRef()
	var st unix.Stat_t
	if unix.Fstat(root.dstFD, &st) == nil {
		root.dstCtime = &st.Ctim
	}
	p.syncDir(root)
	return p.err()
}

// logSummary logs what a pass did.
func (t *tree) logSummary(msg string, s Stats) {
	t.cfg.log.Info(msg, slog.Int64("entries", s.Entries), slog.Int64("files_copied", s.FilesCopied),
		slog.Int64("bytes_written", s.BytesWritten), slog.Int64("deleted", s.Deleted),
		slog.Int64("problems", s.Problems))
}
