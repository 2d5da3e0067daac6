package sync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	stdsync "sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Mirror keeps DST a copy of SRC while SRC changes: a first pass, then inotify events
// mark paths dirty and workers bring those paths to DST. Use it as
//
//	m, err := New(opts)
//	defer m.Close()
//	go m.Follow(ctx)            // first pass, then follow until ctx is done
//	m.Converged(budget)         // is what is dirty quick enough to copy now?
//	m.Flush(ctx, paths)         // final delta: DST matches SRC for paths (and all dirty)
//
// All methods may be called from any goroutine.
type Mirror struct {
	t       *tree
	start   time.Time
	watcher *fsnotify.Watcher
	pumped  chan struct{} // closed when the event pump has stopped

	barrierDir string // outside SRC: Flush's marker that all earlier events were read
	barrierMu  stdsync.Mutex
	barriers   map[string]chan struct{}
	barrierSeq int

	applyMu stdsync.Mutex // one pass or batch at a time

	mu          stdsync.Mutex // guards what follows
	dirty       map[string]time.Time
	inflight    []string // the batch being applied
	inflightAt  time.Time
	rescanDue   bool
	initialDone bool
	fatal       error
	rate        rateMeter
	wake        chan struct{}

	watchMu     stdsync.Mutex
	watched     map[string]fileID // SRC directory (relative) -> the inode watched there
	watchedByID map[fileID]string
}

// New checks opts, opens both trees (creating DST if needed) and sets up inotify. It
// copies nothing yet: see InitialPass and Follow.
func New(opts Options) (*Mirror, error) {
	cfg, err := opts.resolve(false)
	if err != nil {
		return nil, err
	}
	srcFD, dstFD, err := cfg.openRoots()
	if err != nil {
		return nil, err
	}
	m := &Mirror{
		t:           newTree(cfg, srcFD, dstFD),
		start:       time.Now(),
		pumped:      make(chan struct{}),
		barriers:    map[string]chan struct{}{},
		dirty:       map[string]time.Time{},
		wake:        make(chan struct{}, 1),
		watched:     map[string]fileID{},
		watchedByID: map[fileID]string{},
	}
	m.t.idx = newIndex()
	m.t.copier.maps = newMapCache()
	m.t.watchDir = m.watchDir
	if m.watcher, err = fsnotify.NewBufferedWatcher(4096); err != nil {
		m.closeRoots()
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if m.barrierDir, err = os.MkdirTemp("", "livemig-barrier-"); err == nil {
		err = m.watcher.Add(m.barrierDir)
	}
	if err != nil {
		m.watcher.Close()
		m.closeRoots()
		return nil, fmt.Errorf("inotify barrier: %w", err)
	}
	go m.pump()
	return m, nil
}

func (m *Mirror) closeRoots() {
	m.t.copier.maps.close() // a kept mapping holds a SRC file open
	unix.Close(m.t.srcRoot)
	unix.Close(m.t.dstRoot)
}

// Close stops watching and releases the mirror. Call it after Follow has returned.
func (m *Mirror) Close() error {
	err := m.watcher.Close()
	<-m.pumped
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	os.RemoveAll(m.barrierDir)
	m.closeRoots()
	return err
}

// pump turns inotify events into dirty paths. It never copies: it must keep up with
// the kernel's queue, which overflows otherwise.
func (m *Mirror) pump() {
	defer close(m.pumped)
	for {
		select {
		case ev, ok := <-m.watcher.Events:
			if !ok {
				return
			}
			m.onEvent(ev)
		case err, ok := <-m.watcher.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				m.t.stats.overflows.Add(1)
				m.t.cfg.log.Warn("inotify queue overflow: rescanning SRC (raise fs.inotify.max_queued_events to avoid it)")
				m.mu.Lock()
				m.rescanDue = true
				m.mu.Unlock()
				m.poke()
				continue
			}
			m.t.cfg.log.Warn("inotify", "err", err)
		}
	}
}

func (m *Mirror) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Mirror) onEvent(ev fsnotify.Event) {
	if dir, name := filepath.Split(ev.Name); filepath.Clean(dir) == m.barrierDir {
		m.barrierMu.Lock()
		if ch, ok := m.barriers[name]; ok {
			close(ch)
			delete(m.barriers, name)
		}
		m.barrierMu.Unlock()
		return
	}
	rel, ok := m.relOf(ev.Name)
	if !ok {
		return
	}
	if x := m.t.cfg.excl; rel != "." && x.excluded(rel, false) && x.excluded(rel, true) {
		return
	}
	m.markDirty(rel)
}

// relOf turns a path under SRC into one relative to it ("." for SRC itself).
func (m *Mirror) relOf(p string) (string, bool) {
	src := m.t.cfg.src
	switch {
	case p == src:
		return ".", true
	case strings.HasPrefix(p, src+"/"):
		return filepath.Clean(p[len(src)+1:]), true
	}
	return "", false
}

func (m *Mirror) markDirty(rels ...string) {
	now := time.Now()
	m.mu.Lock()
	for _, rel := range rels {
		if _, ok := m.dirty[rel]; !ok {
			m.dirty[rel] = now
		}
	}
	m.mu.Unlock()
	m.poke()
}

// watchDir is called before each SRC directory is listed. fsnotify keeps the path a
// watch was added with, and re-adding a moved directory under its new path hands back
// the old watch, old path included: so a directory that moved is unwatched under its old
// path first. (A watch added after the listing would miss what is created in between.)
func (m *Mirror) watchDir(rel string, srcFD int) error {
	var st unix.Stat_t
	if err := unix.Fstat(srcFD, &st); err != nil {
		return err
	}
	id := idOf(&st)
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	if m.watched[rel] == id {
		return nil
	}
	if old, ok := m.watchedByID[id]; ok {
		_ = m.watcher.Remove(m.abs(old))
		delete(m.watched, old)
	}
	if oldID, ok := m.watched[rel]; ok {
		delete(m.watchedByID, oldID)
	}
	if err := m.watcher.Add(m.abs(rel)); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return m.watchLimitError(err)
		}
		return &PathError{Op: "watch", Err: err}
	}
	m.watched[rel] = id
	m.watchedByID[id] = rel
	return nil
}

func (m *Mirror) abs(rel string) string {
	if rel == "." {
		return m.t.cfg.src
	}
	return m.t.cfg.src + "/" + rel
}

func (m *Mirror) watchLimitError(err error) error {
	// The limit in force is the smaller of the system's and that of our user
	// namespace (the same number outside containers).
	limit := 0
	for _, f := range []string{"/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches"} {
		if b, e := os.ReadFile(f); e == nil {
			if n, e := strconv.Atoi(strings.TrimSpace(string(b))); e == nil && (limit == 0 || n < limit) {
				limit = n
			}
		}
	}
	dirs := 0
	_ = filepath.WalkDir(m.t.cfg.src, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs++
		}
		return nil
	})
	return &WatchLimitError{Limit: limit, Needed: dirs, Err: err}
}

// InitialPass makes DST a copy of SRC, watching every directory before listing it.
// Changes made meanwhile are already noticed; Follow applies them. Per-path problems do
// not make it fail (see Stats).
func (m *Mirror) InitialPass(ctx context.Context) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	return m.fullPass(ctx, true)
}

// fullPass walks everything (the first pass, or a rescan after an overflow).
func (m *Mirror) fullPass(ctx context.Context, first bool) error {
	m.mu.Lock()
	m.rescanDue = false
	m.dirty = map[string]time.Time{} // the walk covers them all
	m.inflightAt = time.Now()
	m.mu.Unlock()
	if !first {
		m.pruneWatches()
	}
	start := time.Now()
	before := m.t.stats.bytesRead.Load()
	err := m.t.newPass(ctx, false, false).run()
	m.mu.Lock()
	m.inflightAt = time.Time{}
	if err == nil {
		m.initialDone = true
		m.rate.observe(0, m.t.stats.bytesRead.Load()-before, time.Since(start))
	}
	m.mu.Unlock()
	m.t.logSummary("pass done", m.Stats())
	return m.setFatal(err)
}

// pruneWatches forgets watches whose directory has moved or gone (an overflow may have
// hidden the events that said so).
func (m *Mirror) pruneWatches() {
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	for rel, id := range m.watched {
		var st unix.Stat_t
		if unix.Lstat(m.abs(rel), &st) == nil && idOf(&st) == id {
			continue
		}
		_ = m.watcher.Remove(m.abs(rel))
		delete(m.watched, rel)
		if m.watchedByID[id] == rel {
			delete(m.watchedByID, id)
		}
	}
}

func (m *Mirror) setFatal(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	m.mu.Lock()
	if m.fatal == nil {
		m.fatal = err
	}
	m.mu.Unlock()
	return err
}

// Follow runs the first pass (unless InitialPass already did) and then applies changes
// until ctx is done, when it returns ctx's error. It returns early on what stops a
// mirror: a full DST (ErrNoSpace) or no inotify watch left (*WatchLimitError).
func (m *Mirror) Follow(ctx context.Context) error {
	m.mu.Lock()
	done := m.initialDone
	m.mu.Unlock()
	if !done {
		if err := m.InitialPass(ctx); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.wake:
		}
		if err := m.applyPending(ctx, nil); err != nil {
			return err
		}
	}
}

// applyPending applies what is dirty (plus extra paths, compared by content), or
// rescans everything after an overflow.
func (m *Mirror) applyPending(ctx context.Context, extra []string) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	rescan := m.rescanDue
	m.mu.Unlock()
	if rescan {
		if err := m.fullPass(ctx, false); err != nil {
			return err
		}
	}
	m.mu.Lock()
	batch := make([]string, 0, len(m.dirty)+len(extra))
	oldest := time.Time{}
	for rel, at := range m.dirty {
		batch = append(batch, rel)
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	m.dirty = map[string]time.Time{}
	if len(batch)+len(extra) == 0 {
		m.mu.Unlock()
		return nil
	}
	if oldest.IsZero() {
		oldest = time.Now()
	}
	m.inflight, m.inflightAt = batch, oldest
	m.mu.Unlock()

	start := time.Now()
	before := m.t.stats.bytesRead.Load()
	err := m.applyBatch(ctx, batch, extra)
	m.mu.Lock()
	m.inflight, m.inflightAt = nil, time.Time{}
	m.rate.observe(len(batch)+len(extra), m.t.stats.bytesRead.Load()-before, time.Since(start))
	m.mu.Unlock()
	return m.setFatal(err)
}

// batchItem is one dirty path of a batch and what SRC has there now.
type batchItem struct {
	rel     string
	st      unix.Stat_t
	present bool
	forced  bool // given to Flush: excludes do not apply
}

func depth(rel string) int {
	if rel == "." {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

// applyBatch brings a set of paths to DST. The order makes renames possible and keeps
// parallel copies apart from changes of the tree's shape:
//  1. serially, shallow first: replay renames (the new name's inode was known under a
//     name SRC no longer has) and make missing parent directories;
//  2. in parallel: copy files, make links, walk new (or moved) directories;
//  3. serially, deepest first: remove what SRC no longer has;
//  4. serially, deepest first: set the touched directories' metadata, which every
//     change inside them has moved.
func (m *Mirror) applyBatch(ctx context.Context, dirty, forced []string) error {
	p := m.t.newPass(ctx, len(forced) > 0, true)
	items := m.statItems(dirty, forced)
	dirMeta := map[string]bool{}
	var work []*batchItem // for step 2
	for _, it := range items {
		if it.rel == "." {
			dirMeta["."] = true
			continue
		}
		parent, _ := splitRel(it.rel)
		dirMeta[parent] = true
		if !it.present {
			continue
		}
		if !it.forced && m.t.cfg.excl.excluded(it.rel, it.st.Mode&unix.S_IFMT == unix.S_IFDIR) {
			continue
		}
		if err := m.ensureParents(p, parent); err != nil {
			p.problem(it.rel, err)
			continue
		}
		renamed := m.replayRename(p, it)
		if it.st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if e, ok := m.t.idx.get(it.rel); ok && e.id == idOf(&it.st) && !renamed {
				dirMeta[it.rel] = true // known directory: its own watch reports its content
				continue
			}
		}
		work = append(work, it)
	}
	if p.stopped() {
		return p.err()
	}

	var wg stdsync.WaitGroup
	for _, it := range work {
		m.t.w.spawn(&wg, func() {
			if !p.stopped() {
				p.problem(it.rel, m.syncPath(p, it.rel))
			}
		})
	}
	wg.Wait()
	if p.stopped() {
		return p.err()
	}

	for i := len(items) - 1; i >= 0; i-- {
		it := items[i]
		if it.present || it.rel == "." || !m.t.cfg.delete {
			continue
		}
		m.removeMissing(p, it.rel)
	}

	metaDirs := make([]string, 0, len(dirMeta))
	for d := range dirMeta {
		metaDirs = append(metaDirs, d)
	}
	sort.Slice(metaDirs, func(i, j int) bool { return depth(metaDirs[i]) > depth(metaDirs[j]) })
	for _, d := range metaDirs {
		dr, err := m.t.openDirPair(d)
		if err != nil {
			continue // gone meanwhile, or not mirrored (excluded): nothing to set
		}
		p.problem(d, p.syncDirMeta(dr))
		dr.close(m.t)
	}
	return p.err()
}

// statItems looks at SRC for every path of a batch, shallow paths first. A path under a
// symlink is not in SRC (we never follow one).
func (m *Mirror) statItems(dirty, forced []string) []*batchItem {
	seen := map[string]*batchItem{}
	var items []*batchItem
	add := func(rel string, force bool) {
		if it, ok := seen[rel]; ok {
			it.forced = it.forced || force
			return
		}
		it := &batchItem{rel: rel, forced: force}
		seen[rel] = it
		items = append(items, it)
	}
	for _, rel := range dirty {
		add(rel, false)
	}
	for _, rel := range forced {
		add(rel, true)
	}
	sort.Slice(items, func(i, j int) bool {
		if di, dj := depth(items[i].rel), depth(items[j].rel); di != dj {
			return di < dj
		}
		return items[i].rel < items[j].rel
	})
	dirs := map[string]int{}
	defer func() {
		for _, fd := range dirs {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	for _, it := range items {
		if it.rel == "." {
			it.present = unix.Fstat(m.t.srcRoot, &it.st) == nil
			continue
		}
		parent, name := splitRel(it.rel)
		fd, ok := dirs[parent]
		if !ok {
			if parent == "." {
				fd = -1
			} else if fd, _ = openDirBeneath(m.t.srcRoot, parent, true); fd < 0 {
				fd = -2
			}
			dirs[parent] = fd
		}
		switch fd {
		case -1:
			it.present = lstatAt(m.t.srcRoot, name, &it.st) == nil
		case -2:
			it.present = false
		default:
			it.present = lstatAt(fd, name, &it.st) == nil
		}
	}
	return items
}

// ensureParents makes sure DST has the directory rel and its ancestors; an ancestor it
// has to make is walked in full (its creation is an event in flight).
func (m *Mirror) ensureParents(p *pass, rel string) error {
	if rel == "." {
		return nil
	}
	if fd, err := openDirBeneath(m.t.dstRoot, rel, false); err == nil {
		unix.Close(fd)
		return nil
	}
	parent, _ := splitRel(rel)
	if err := m.ensureParents(p, parent); err != nil {
		return err
	}
	return m.syncPath(p, rel)
}

// replayRename renames at DST when it.rel's inode was mirrored under another name that
// SRC no longer has (so a rename or a move of a whole directory costs one rename, not a
// copy). It reports whether it did.
func (m *Mirror) replayRename(p *pass, it *batchItem) bool {
	id := idOf(&it.st)
	if e, ok := m.t.idx.get(it.rel); ok && e.id == id {
		return false
	}
	for _, old := range m.t.idx.pathsOf(id) {
		if old == it.rel || isUnder(it.rel, old) {
			continue
		}
		if m.t.srcHas(old, id) {
			continue // still there: a hardlink, which step 2 links
		}
		if err := m.renameAtDst(old, it.rel); err != nil {
			m.t.cfg.log.Debug("rename not replayed, copying instead", "from", old, "to", it.rel, "err", err)
			return false
		}
		m.t.idx.move(old, it.rel)
		m.t.stats.renamed.Add(1)
		return true
	}
	return false
}

func (m *Mirror) renameAtDst(from, to string) error {
	fromDir, fromName := splitRel(from)
	toDir, toName := splitRel(to)
	ffd, err := openDirBeneath(m.t.dstRoot, fromDir, false)
	if err != nil {
		return err
	}
	defer unix.Close(ffd)
	tfd, err := openDirBeneath(m.t.dstRoot, toDir, false)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := lstatAt(ffd, fromName, &st); err != nil {
		return err
	}
	err = unix.Renameat(ffd, fromName, tfd, toName)
	if err == unix.ENOTEMPTY || err == unix.EEXIST || err == unix.EISDIR || err == unix.ENOTDIR {
		// SRC's rename replaced an entry that rename(2) cannot replace at DST as is.
		if err := removeAllAt(tfd, toName); err != nil {
			return err
		}
		m.t.idx.remove(to)
		err = unix.Renameat(ffd, fromName, tfd, toName)
	}
	return err
}

// syncPath mirrors one path (recursively for a directory) from its parent directory.
func (m *Mirror) syncPath(p *pass, rel string) error {
	parent, name := splitRel(rel)
	d, err := m.t.openDirPair(parent)
	if err != nil {
		return err
	}
	defer d.close(m.t)
	var st unix.Stat_t
	if err := lstatAt(d.srcFD, name, &st); err != nil {
		return err
	}
	err = p.syncOne(d, name, rel, &st)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
		err = m.relinkSiblings(p, rel, &st)
	}
	return err
}

// relinkSiblings makes the other DST names of a hardlinked file, which the copy of rel
// may have left on the old inode, links to rel again.
func (m *Mirror) relinkSiblings(p *pass, rel string, st *unix.Stat_t) error {
	id := idOf(st)
	for _, other := range m.t.idx.pathsOf(id) {
		if other == rel || !m.t.srcHas(other, id) {
			continue
		}
		d, err := m.t.openDirPair(func() string { dir, _ := splitRel(other); return dir }())
		if err != nil {
			continue
		}
		_, name := splitRel(other)
		var dst unix.Stat_t
		dstSt := &dst
		if lstatAt(d.dstFD, name, &dst) != nil {
			dstSt = nil
		}
		err = p.linkTo(d, name, other, st, rel, dstSt)
		if err == nil {
			err = p.syncDirMeta(d) // the link moved its directory's mtime
		}
		d.close(m.t)
		if err != nil {
			return err
		}
	}
	return nil
}

// removeMissing removes DST's rel, which SRC no longer has.
func (m *Mirror) removeMissing(p *pass, rel string) {
	parent, name := splitRel(rel)
	fd, err := openDirBeneath(m.t.dstRoot, parent, false)
	if err != nil {
		return // its parent is gone too
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if lstatAt(fd, name, &st) != nil {
		m.t.idx.remove(rel)
		return
	}
	p.removeExtra(fd, rel, name)
}

// barrier returns once every inotify event queued before the call has been read: the
// queue is in order, so the event of a marker file made now comes after all of them.
func (m *Mirror) barrier(ctx context.Context) {
	m.barrierMu.Lock()
	m.barrierSeq++
	name := "b" + strconv.Itoa(m.barrierSeq)
	ch := make(chan struct{})
	m.barriers[name] = ch
	m.barrierMu.Unlock()
	path := filepath.Join(m.barrierDir, name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		m.t.cfg.log.Warn("inotify barrier", "err", err)
		return
	}
	defer os.Remove(path)
	select {
	case <-ch:
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
		m.t.cfg.log.Warn("inotify barrier timed out")
	}
}

// Flush is the final delta of a cutover: it returns once DST matches SRC for paths
// (absolute under SRC, or relative to it) and for every change noticed so far. The
// paths are compared by content, not by events or mtimes (a write through a shared
// mapping raises no event), and excludes do not apply to them. Call it with the writers
// stopped; it may run while Follow does.
func (m *Mirror) Flush(ctx context.Context, paths []string) error {
	rels := make([]string, 0, len(paths))
	for _, p := range paths {
		rel := p
		if filepath.IsAbs(p) {
			var ok bool
			if rel, ok = m.relOf(filepath.Clean(p)); !ok {
				return &InputError{Path: p, Reason: "not under SRC " + m.t.cfg.src}
			}
		}
		rel = filepath.Clean(rel)
		if rel == ".." || strings.HasPrefix(rel, "../") {
			return &InputError{Path: p, Reason: "not under SRC " + m.t.cfg.src}
		}
		rels = append(rels, rel)
	}
	m.barrier(ctx)
	if err := m.applyPending(ctx, rels); err != nil {
		return err
	}
	// A rescan due to an overflow during the flush is done right away, not left to
	// Follow: the caller wants DST to match now.
	m.mu.Lock()
	rescan := m.rescanDue
	m.mu.Unlock()
	if rescan {
		return m.applyPending(ctx, nil)
	}
	return ctx.Err()
}

// Stats returns the mirror's totals so far.
func (m *Mirror) Stats() Stats { return m.t.snapshot(m.start) }
