package sync

import (
	"runtime/debug"
	stdsync "sync"
	"time"

	"golang.org/x/sys/unix"
)

// A follower patches the same large file again and again (a log being appended to), and
// each time must hash all of it: inotify does not say where a file changed. Reading it
// through read() copies every byte into a buffer first, which costs more than hashing
// it. So the delta hashes SRC straight from a read-only shared mapping instead, and
// keeps that mapping for the next change of the same file: its page tables are then
// already filled, and a second change costs the hashing alone.
//
// A shared mapping always shows the file's current content (writes, truncations and hole
// punches all reach it), so a kept mapping never shows stale data. Reading a page past
// the end of a file that shrank raises SIGBUS: the hashing runs with SetPanicOnFault, and
// a fault falls back to read() (the change that shrank the file has us copy it again).
// A kept mapping holds its file open, so it is dropped after mapIdle without use, when
// more than mapKeep are kept, and when the mirror closes.

const (
	// mapIdle is how long a mapping is kept after its last use.
	mapIdle = 2 * time.Second
	// mapKeep is how many mappings are kept at most.
	mapKeep = 16
	// mapPiece is the share of a mapped file one worker hashes: small enough to keep
	// two workers evenly busy, large enough to be few.
	mapPiece = 8 << 20
)

// srcMapping is a read-only shared mapping of a SRC file, from offset 0.
type srcMapping struct {
	id    fileID
	data  []byte // may reach past the end of the file: only [0, size) is read
	refs  int    // patches using it now
	used  time.Time
	kept  bool // in the cache (else unmapped at its last release)
	timer *time.Timer
}

// mapCache keeps the mappings of the files a follower patched lately, by inode. A
// mapping pins its inode, so a cached inode number cannot be reused meanwhile.
type mapCache struct {
	mu     stdsync.Mutex
	byID   map[fileID]*srcMapping
	closed bool
}

func newMapCache() *mapCache { return &mapCache{byID: map[fileID]*srcMapping{}} }

// mapLen is the length mapped for a file of size bytes: some room to grow, so that
// appends do not need a new mapping each time.
func mapLen(size int64) int {
	n := size + size/8 + (1 << 20)
	page := int64(unix.Getpagesize())
	return int((n + page - 1) / page * page)
}

// get returns a mapping of the SRC file fd (stat st) covering its st.Size bytes; release
// it when done. nil when the file cannot be mapped (the caller reads it instead).
func (mc *mapCache) get(fd int, st *unix.Stat_t) *srcMapping {
	id := idOf(st)
	if mc != nil {
		mc.mu.Lock()
		if m, ok := mc.byID[id]; ok && !mc.closed {
			if int64(len(m.data)) >= st.Size {
				m.refs++
				mc.mu.Unlock()
				return m
			}
			if m.refs == 0 { // grown past the mapping: map it anew
				mc.dropLocked(m)
			}
		}
		mc.mu.Unlock()
	}
	data, err := unix.Mmap(fd, 0, mapLen(st.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	m := &srcMapping{id: id, data: data, refs: 1}
	if mc == nil {
		return m
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if _, taken := mc.byID[id]; taken || mc.closed {
		return m // another patch of the same file keeps its own: this one is not kept
	}
	m.kept = true
	mc.byID[id] = m
	if len(mc.byID) > mapKeep {
		mc.evictLocked()
	}
	return m
}

// release ends one use of m.
func (mc *mapCache) release(m *srcMapping) {
	if mc == nil {
		_ = unix.Munmap(m.data)
		return
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	m.refs--
	if !m.kept { // never kept, or dropped from the cache while in use
		if m.refs == 0 {
			_ = unix.Munmap(m.data)
		}
		return
	}
	m.used = time.Now()
	if m.timer == nil {
		m.timer = time.AfterFunc(mapIdle, func() { mc.expire(m) })
	} else {
		m.timer.Reset(mapIdle)
	}
}

// expire drops m if it has not been used for mapIdle.
func (mc *mapCache) expire(m *srcMapping) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if !m.kept || m.refs > 0 {
		return
	}
	if wait := mapIdle - time.Since(m.used); wait > 0 {
		m.timer.Reset(wait)
		return
	}
	mc.dropLocked(m)
}

// evictLocked drops the least recently used mapping not in use.
func (mc *mapCache) evictLocked() {
	var old *srcMapping
	for _, m := range mc.byID {
		if m.refs == 0 && (old == nil || m.used.Before(old.used)) {
			old = m
		}
	}
	if old != nil {
		mc.dropLocked(old)
	}
}

// dropLocked takes m out of the cache; it is unmapped now, or at its last release.
func (mc *mapCache) dropLocked(m *srcMapping) {
	delete(mc.byID, m.id)
	m.kept = false
	if m.timer != nil {
		m.timer.Stop()
	}
	if m.refs == 0 {
		_ = unix.Munmap(m.data)
	}
}

// close drops every mapping (those in use at their release) and keeps no more.
func (mc *mapCache) close() {
	if mc == nil {
		return
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	mc.closed = true
	for _, m := range mc.byID {
		mc.dropLocked(m)
	}
}

// len is the number of mappings kept (for tests).
func (mc *mapCache) len() int {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return len(mc.byID)
}

// withFaults runs f, turning a fault on a mapped page (SRC shrank under the mapping:
// SIGBUS) into faulted = true instead of a crash. Other panics go on.
func withFaults(f func() error) (faulted bool, err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); ok {
				faulted = true
				return
			}
			panic(r)
		}
	}()
	return false, f()
}
