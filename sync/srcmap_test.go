package sync

import (
	"bytes"
	"hash/maphash"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// patchFixture is a SRC and a DST file with the same content, DST's block hashes, and
// a copier keeping mappings as a follower's does.
type patchFixture struct {
	c          *fileCopier
	src, dst   string
	sfd, dfd   int
	cache      *blockCache
	size       int64
	srcContent []byte
}

func newPatchFixture(t testing.TB, dir string, data []byte) *patchFixture {
	f := &patchFixture{
		c:   &fileCopier{w: newWorkers(2), jobs: 2, stats: &copyStats{}, maps: newMapCache()},
		src: filepath.Join(dir, "src"), dst: filepath.Join(dir, "dst"),
	}
	must(t, os.WriteFile(f.src, data, 0o644))
	must(t, os.WriteFile(f.dst, data, 0o644))
	var err error
	f.dfd, err = unix.Open(f.dst, unix.O_RDWR|unix.O_CLOEXEC, 0)
	must(t, err)
	f.reopen(t)
	hashes, _, err := f.c.patch(f.sfd, f.dfd, f.size, f.size, nil, nil)
	must(t, err)
	f.setCache(t, hashes)
	t.Cleanup(func() {
		unix.Close(f.sfd)
		unix.Close(f.dfd)
		f.c.maps.close()
	})
	return f
}

// reopen opens SRC again, as each copy of a changed file does.
func (f *patchFixture) reopen(t testing.TB) {
	if f.sfd > 0 {
		unix.Close(f.sfd)
	}
	var err error
	f.sfd, err = unix.Open(f.src, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Fstat(f.sfd, &st))
	f.size = st.Size
}

func (f *patchFixture) setCache(t testing.TB, hashes []uint64) {
	var st unix.Stat_t
	must(t, unix.Fstat(f.dfd, &st))
	f.cache = &blockCache{sig: sigOf(&st), hashes: hashes}
}

// sync patches DST through a mapping of SRC, as a follower does, and returns what it wrote.
func (f *patchFixture) sync(t testing.TB) int64 {
	f.reopen(t)
	var st unix.Stat_t
	must(t, unix.Fstat(f.sfd, &st))
	sm := f.c.maps.get(f.sfd, &st)
	if sm == nil {
		t.Fatal("SRC could not be mapped")
	}
	defer f.c.maps.release(sm)
	var dst unix.Stat_t
	must(t, unix.Fstat(f.dfd, &dst))
	before := f.c.stats.bytesWritten.Load()
	hashes, _, err := f.c.patch(f.sfd, f.dfd, f.size, dst.Size, f.cache, sm)
	must(t, err)
	f.setCache(t, hashes)
	return f.c.stats.bytesWritten.Load() - before
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	must(t, err)
	y, err := os.ReadFile(b)
	must(t, err)
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ (%d and %d bytes)", a, b, len(x), len(y))
	}
}

// TestPatchMappedFindsAnyChange: hashing SRC through a kept mapping finds a change
// anywhere in the file, not only at its end, and writes only the blocks that changed.
func TestPatchMappedFindsAnyChange(t *testing.T) {
	f := newPatchFixture(t, t.TempDir(), randBytes(1, 20<<20+123))
	write := func(off int64, data []byte) {
		fd, err := os.OpenFile(f.src, os.O_WRONLY, 0)
		must(t, err)
		_, err = fd.WriteAt(data, off)
		must(t, err)
		must(t, fd.Close())
	}
	for i, off := range []int64{0, 7<<20 + 5, 20<<20 + 100, 13 << 20} {
		write(off, []byte("x"))
		if w := f.sync(t); w != blockSize && w != 20<<20+123-(20<<20) {
			t.Errorf("change %d at %d: wrote %d bytes, want one block", i, off, w)
		}
		sameFiles(t, f.src, f.dst)
	}
	// A change that leaves the block as it was writes nothing.
	write(3<<20, []byte{randBytes(1, 20<<20)[3<<20]})
	if w := f.sync(t); w != 0 {
		t.Errorf("unchanged content: wrote %d bytes", w)
	}
	if f.c.maps.len() != 1 {
		t.Errorf("%d mappings kept, want 1", f.c.maps.len())
	}
	// Appends, past the room the mapping had, and a truncation.
	for i := range 3 {
		fd, err := os.OpenFile(f.src, os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		_, err = fd.Write(randBytes(int64(i), 3<<20+7))
		must(t, err)
		must(t, fd.Close())
		f.sync(t)
		sameFiles(t, f.src, f.dst)
	}
	must(t, os.Truncate(f.src, 9<<20+1))
	f.sync(t)
	sameFiles(t, f.src, f.dst)
	// The file replaced by another (new inode): its own mapping.
	must(t, os.WriteFile(f.src+".new", randBytes(9, 5<<20), 0o644))
	must(t, os.Rename(f.src+".new", f.src))
	f.sync(t)
	sameFiles(t, f.src, f.dst)
}

// TestMappedFault: a file that shrinks under its mapping makes the hashing fault, which
// withFaults turns into a fallback instead of a crash; patch then reads what is left.
func TestMappedFault(t *testing.T) {
	dir := t.TempDir()
	f := newPatchFixture(t, dir, randBytes(2, 8<<20))
	var st unix.Stat_t
	must(t, unix.Fstat(f.sfd, &st))
	sm := f.c.maps.get(f.sfd, &st)
	if sm == nil {
		t.Fatal("SRC could not be mapped")
	}
	defer f.c.maps.release(sm)
	must(t, os.Truncate(f.src, 1<<20))
	faulted, err := withFaults(func() error {
		_ = maphash.Bytes(hashSeed, sm.data[4<<20:5<<20])
		return nil
	})
	if !faulted || err != nil {
		t.Fatalf("faulted %v, err %v: want a fault", faulted, err)
	}
	// patch with the size seen before the truncation: no crash, no error.
	if _, _, err := f.c.patch(f.sfd, f.dfd, 8<<20, 8<<20, f.cache, sm); err != nil {
		t.Fatal(err)
	}
	// Other panics are not swallowed.
	defer func() {
		if r := recover(); r != "other" {
			t.Errorf("recovered %v, want the panic to go on", r)
		}
	}()
	_, _ = withFaults(func() error { panic("other") })
}

// TestMapCacheRelease: kept mappings are dropped when the cache closes, and a mapping
// dropped while in use is unmapped at its release.
func TestMapCacheRelease(t *testing.T) {
	dir := t.TempDir()
	var fds []int
	for i := range mapKeep + 3 {
		p := filepath.Join(dir, string(rune('a'+i)))
		must(t, os.WriteFile(p, randBytes(int64(i), 1<<20), 0o644))
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		must(t, err)
		defer unix.Close(fd)
		fds = append(fds, fd)
	}
	mc := newMapCache()
	var st unix.Stat_t
	for _, fd := range fds {
		must(t, unix.Fstat(fd, &st))
		sm := mc.get(fd, &st)
		if sm == nil {
			t.Fatal("could not map")
		}
		mc.release(sm)
	}
	if n := mc.len(); n > mapKeep {
		t.Errorf("%d mappings kept, at most %d wanted", n, mapKeep)
	}
	must(t, unix.Fstat(fds[len(fds)-1], &st))
	inUse := mc.get(fds[len(fds)-1], &st)
	mc.close()
	if n := mc.len(); n != 0 {
		t.Errorf("%d mappings kept after close", n)
	}
	if inUse.data[0] != randBytes(int64(len(fds)-1), 1)[0] { // still mapped while in use
		t.Error("mapping in use changed")
	}
	mc.release(inUse)
	if sm := mc.get(fds[0], &st); sm != nil {
		mc.release(sm) // a closed cache still maps, but keeps nothing
	}
	if n := mc.len(); n != 0 {
		t.Errorf("%d mappings kept after close", n)
	}
}

// BenchmarkPatchAppend is the delta of a 4 KiB append to a 200 MiB file on tmpfs, the
// follower's work in the append lag row: read is SRC read through read(), mapped through
// a kept mapping.
func BenchmarkPatchAppend(b *testing.B) {
	for _, mapped := range []bool{false, true} {
		name := map[bool]string{false: "read", true: "mapped"}[mapped]
		b.Run(name, func(b *testing.B) {
			dir, err := os.MkdirTemp("/dev/shm", "livemig-bench-")
			must(b, err)
			defer os.RemoveAll(dir)
			f := newPatchFixture(b, dir, randBytes(1, 200<<20))
			if !mapped {
				f.c.maps = nil
			}
			tail := randBytes(2, 4<<10)
			b.SetBytes(200 << 20)
			b.ResetTimer()
			for range b.N {
				fd, err := os.OpenFile(f.src, os.O_WRONLY|os.O_APPEND, 0)
				must(b, err)
				_, err = fd.Write(tail)
				must(b, err)
				must(b, fd.Close())
				f.reopen(b)
				var st, dst unix.Stat_t
				must(b, unix.Fstat(f.sfd, &st))
				must(b, unix.Fstat(f.dfd, &dst))
				var sm *srcMapping
				if mapped {
					sm = f.c.maps.get(f.sfd, &st)
				}
				hashes, _, err := f.c.patch(f.sfd, f.dfd, f.size, dst.Size, f.cache, sm)
				must(b, err)
				if sm != nil {
					f.c.maps.release(sm)
				}
				f.setCache(b, hashes)
			}
		})
	}
}
