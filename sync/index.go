package sync

import (
	"sort"
	stdsync "sync"
)

// index is the following mirror's memory of what DST holds: for each path, the SRC
// inode it mirrors and, for large files, the block hashes of what we wrote. It is how a
// rename is recognised (the new name's inode was known under the old name), how a new
// hardlink becomes a link, and how a change is found without reading DST back.
type index struct {
	mu     stdsync.Mutex
	byPath map[string]*indexEntry
	byID   map[fileID]map[string]struct{}
}

type indexEntry struct {
	id    fileID
	dir   bool
	cache *blockCache
}

func newIndex() *index {
	return &index{byPath: map[string]*indexEntry{}, byID: map[fileID]map[string]struct{}{}}
}

// set records that DST's rel mirrors SRC inode id. A nil cache drops any block hashes.
func (x *index) set(rel string, id fileID, dir bool, cache *blockCache) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.byPath[rel]; ok && old.id != id {
		x.unlinkID(old.id, rel)
	}
	x.byPath[rel] = &indexEntry{id: id, dir: dir, cache: cache}
	paths := x.byID[id]
	if paths == nil {
		paths = map[string]struct{}{}
		x.byID[id] = paths
	}
	paths[rel] = struct{}{}
}

// setSig refreshes the DST signature of rel's block hashes after a change of metadata
// only (it moves DST's ctime, but the content the hashes describe is unchanged).
func (x *index) setSig(rel string, sig fileSig) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.byPath[rel]; ok && e.cache != nil {
		c := *e.cache
		c.sig = sig
		e.cache = &c
	}
}

func (x *index) get(rel string) (indexEntry, bool) {
	if x == nil {
		return indexEntry{}, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.byPath[rel]
	if !ok {
		return indexEntry{}, false
	}
	return *e, true
}

// pathsOf lists the DST paths that mirror SRC inode id, sorted.
func (x *index) pathsOf(id fileID) []string {
	if x == nil {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]string, 0, len(x.byID[id]))
	for p := range x.byID[id] {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func (x *index) unlinkID(id fileID, rel string) {
	if paths := x.byID[id]; paths != nil {
		delete(paths, rel)
		if len(paths) == 0 {
			delete(x.byID, id)
		}
	}
}

// remove forgets rel and, for a directory, everything below it.
func (x *index) remove(rel string) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.eachUnder(rel, func(p string, e *indexEntry) {
		x.unlinkID(e.id, p)
		delete(x.byPath, p)
	})
}

// move renames rel (and everything below it) to to, after the same rename at DST.
func (x *index) move(from, to string) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.eachUnder(to, func(p string, e *indexEntry) { // what the rename replaced
		x.unlinkID(e.id, p)
		delete(x.byPath, p)
	})
	type moved struct {
		p string
		e *indexEntry
	}
	var ms []moved
	x.eachUnder(from, func(p string, e *indexEntry) { ms = append(ms, moved{p, e}) })
	for _, m := range ms {
		x.unlinkID(m.e.id, m.p)
		delete(x.byPath, m.p)
	}
	for _, m := range ms {
		np := to + m.p[len(from):]
		x.byPath[np] = m.e
		paths := x.byID[m.e.id]
		if paths == nil {
			paths = map[string]struct{}{}
			x.byID[m.e.id] = paths
		}
		paths[np] = struct{}{}
	}
}

// eachUnder calls f for rel and, when rel is a directory, every path below it. The
// scan over all paths keeps the index a plain map; renames of directories are rare
// next to the lookups by path and by inode.
func (x *index) eachUnder(rel string, f func(string, *indexEntry)) {
	e, ok := x.byPath[rel]
	if ok {
		f(rel, e)
	}
	if ok && !e.dir {
		return
	}
	prefix := rel + "/"
	for p, e := range x.byPath {
		if len(p) > len(prefix) && p[:len(prefix)] == prefix {
			f(p, e)
		}
	}
}
