package sync

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
	"golang.org/x/sys/unix"
)

// follow starts a mirror of src onto dst that follows until the test ends.
func follow(t *testing.T, opts Options) *Mirror {
	t.Helper()
	m, err := New(opts)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Follow(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Follow: %v", err)
		}
		must(t, m.Close())
	})
	testutil.Eventually(t, 10*time.Second, "the first pass", func() bool { return !m.Lag().Rescanning })
	return m
}

func TestFollowPropagatesEveryKindOfChange(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	p := func(n string) string { return filepath.Join(src, n) }
	writeFile(t, p("a/file"), []byte("first"), 0o644)
	writeFile(t, p("a/b/deep"), []byte("deep"), 0o644)
	m := follow(t, Options{Src: src, Dst: dst, Delete: true})
	requireSame(t, src, dst)

	steps := []struct {
		name string
		do   func()
	}{
		{"create", func() { writeFile(t, p("new"), []byte("new file"), 0o640) }},
		{"append", func() {
			f, err := os.OpenFile(p("new"), os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteString(" and more")
			must(t, err)
			must(t, f.Close())
		}},
		{"overwrite same size", func() { writeFile(t, p("new"), []byte("NEW FILE and more"), 0o640) }},
		{"truncate", func() { must(t, os.Truncate(p("new"), 3)) }},
		{"chmod", func() { must(t, os.Chmod(p("new"), 0o600|os.ModeSetgid)) }},
		{"chown", func() { must(t, os.Chown(p("new"), 4242, 4343)) }},
		{"xattr", func() { must(t, unix.Setxattr(p("new"), "user.k", []byte("v"), 0)) }},
		{"touch", func() { setTimes(t, p("new"), stamp) }},
		{"mkdir -p with files", func() {
			must(t, os.MkdirAll(p("x/y/z"), 0o755))
			writeFile(t, p("x/y/z/f"), []byte("f"), 0o644)
			writeFile(t, p("x/g"), []byte("g"), 0o644)
		}},
		{"rename file", func() { must(t, os.Rename(p("new"), p("a/renamed"))) }},
		{"rename dir", func() { must(t, os.Rename(p("x"), p("a/b/x2"))) }},
		{"write in renamed dir", func() { writeFile(t, p("a/b/x2/y/z/after"), []byte("after the move"), 0o644) }},
		{"symlink", func() { must(t, os.Symlink("a/file", p("sl"))) }},
		{"retarget symlink", func() { must(t, os.Remove(p("sl"))); must(t, os.Symlink("a/b/deep", p("sl"))) }},
		{"hardlink", func() { must(t, os.Link(p("a/file"), p("hl"))) }},
		{"write through one link", func() { writeFile(t, p("hl"), []byte("written through hl"), 0o644) }},
		{"fifo", func() { must(t, unix.Mkfifo(p("fifo"), 0o600)) }},
		{"replace file by dir", func() { must(t, os.Remove(p("a/renamed"))); must(t, os.Mkdir(p("a/renamed"), 0o711)) }},
		{"delete file", func() { must(t, os.Remove(p("a/file"))) }},
		{"delete tree", func() { must(t, os.RemoveAll(p("a/b"))) }},
		{"chmod root", func() { must(t, os.Chmod(src, 0o751)) }},
	}
	for _, s := range steps {
		s.do()
		took := eventuallySame(t, src, dst, 2*time.Second)
		t.Logf("%-22s at DST after %v", s.name, took)
	}
	if st := m.Stats(); st.Renamed < 2 {
		t.Errorf("renames were copied, not replayed: %+v", st)
	}
}

func TestFollowRenameOfDirectoryMovesIt(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	for i := range 50 {
		writeFile(t, filepath.Join(src, "dir/sub", string(rune('a'+i%26))+string(rune('a'+i/26))), randBytes(int64(i), 10000), 0o644)
	}
	m := follow(t, Options{Src: src, Dst: dst, Delete: true})
	ino := lstat(t, filepath.Join(dst, "dir/sub")).Ino
	before := m.Stats()
	must(t, os.Rename(filepath.Join(src, "dir"), filepath.Join(src, "moved")))
	eventuallySame(t, src, dst, 2*time.Second)
	after := m.Stats()
	if got := lstat(t, filepath.Join(dst, "moved/sub")).Ino; got != ino {
		t.Errorf("DST directory was recreated (inode %d, was %d)", got, ino)
	}
	if after.FilesCopied != before.FilesCopied || after.Renamed != before.Renamed+1 {
		t.Errorf("rename cost copies: before %+v after %+v", before, after)
	}
}

func TestFollowDeltaReadsOnlySrc(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	big := filepath.Join(src, "big")
	const size = 64 << 20
	writeFile(t, big, randBytes(1, size), 0o644)
	m := follow(t, Options{Src: src, Dst: dst, Delete: true})
	ino := lstat(t, filepath.Join(dst, "big")).Ino
	before := m.Stats()
	f, err := os.OpenFile(big, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.Write(randBytes(2, 4096))
	must(t, err)
	must(t, f.Close())
	eventuallySame(t, src, dst, 2*time.Second)
	after := m.Stats()
	written, read := after.BytesWritten-before.BytesWritten, after.BytesRead-before.BytesRead
	if written > blockSize {
		t.Errorf("4 KiB appended, %d bytes written", written)
	}
	if read > size+4096+blockSize {
		t.Errorf("%d bytes read for a %d-byte file: DST was read back", read, size)
	}
	if got := lstat(t, filepath.Join(dst, "big")).Ino; got != ino {
		t.Errorf("the append replaced DST's file instead of patching it")
	}
}

// A write through a shared mapping raises no inotify event: Flush, comparing content,
// still brings it over.
func TestFlushCopiesWritesInvisibleToInotify(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	path := filepath.Join(src, "mapped")
	writeFile(t, path, make([]byte, 2<<20), 0o644)
	m := follow(t, Options{Src: src, Dst: dst, Delete: true})
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	mem, err := unix.Mmap(int(f.Fd()), 0, 2<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must(t, err)
	copy(mem[1<<20:], "written through a shared mapping")
	must(t, unix.Munmap(mem))
	must(t, f.Close())
	// The mtime moved (munmap flushes it), but no event came: keep the mtime as it was
	// to be sure only a content comparison can see the change.
	setTimes(t, path, lstat(t, filepath.Join(dst, "mapped")).Mtim)
	time.Sleep(50 * time.Millisecond)
	must(t, m.Flush(context.Background(), []string{path}))
	requireSame(t, src, dst)
	if !m.Converged(10 * time.Millisecond) {
		t.Errorf("not converged after a flush: %+v", m.Lag())
	}
}
