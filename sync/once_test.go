package sync

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/livemig/livemig/internal/testutil"
	"golang.org/x/sys/unix"
)

var stamp = unix.Timespec{Sec: 1234567890, Nsec: 123456789}

func setTimes(t testing.TB, path string, ts unix.Timespec) {
	t.Helper()
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
}

// makeEveryKind fills src with one of every kind of entry and metadata the mirror keeps.
func makeEveryKind(t *testing.T, src string) {
	p := func(n string) string { return filepath.Join(src, n) }
	must(t, os.Mkdir(p("d"), 0o750))
	must(t, os.Chown(p("d"), 1001, 1002))
	must(t, unix.Setxattr(p("d"), "user.dir", []byte("on a directory"), 0))
	must(t, unix.Setxattr(p("d"), "system.posix_acl_default", posixACL(
		[3]uint32{aclUserObj, 7, aclUndefID}, [3]uint32{aclUser, 5, 1000},
		[3]uint32{aclGroupObj, 5, aclUndefID}, [3]uint32{aclMask, 5, aclUndefID},
		[3]uint32{aclOther, 0, aclUndefID}), 0))
	must(t, os.Mkdir(p("sticky"), 0o755))
	must(t, os.Chmod(p("sticky"), 0o777|os.ModeSticky))
	must(t, os.MkdirAll(p("empty/deeper/still"), 0o700))

	writeFile(t, p("d/setuid"), []byte("setuid binary"), 0o755)
	must(t, os.Chmod(p("d/setuid"), 0o755|os.ModeSetuid))
	writeFile(t, p("setgid"), []byte("setgid"), 0o750)
	must(t, os.Chown(p("setgid"), 1234, 5678))
	must(t, os.Chmod(p("setgid"), 0o750|os.ModeSetgid))

	writeFile(t, p("acl"), []byte("acl"), 0o640)
	must(t, unix.Setxattr(p("acl"), "system.posix_acl_access", posixACL(
		[3]uint32{aclUserObj, 6, aclUndefID}, [3]uint32{aclUser, 7, 1000},
		[3]uint32{aclGroupObj, 4, aclUndefID}, [3]uint32{aclMask, 7, aclUndefID},
		[3]uint32{aclOther, 0, aclUndefID}), 0))
	writeFile(t, p("xattrs"), []byte("x"), 0o644)
	must(t, unix.Setxattr(p("xattrs"), "user.text", []byte("hello"), 0))
	must(t, unix.Setxattr(p("xattrs"), "user.binary", []byte{0, 1, 2, 255}, 0))
	must(t, unix.Setxattr(p("xattrs"), "trusted.root", []byte("only root sees me"), 0))

	must(t, os.Symlink("d/setuid", p("link")))
	must(t, os.Lchown(p("link"), 1500, 1501))
	must(t, os.Symlink("/nonexistent/target", p("dangling")))

	writeFile(t, p("h1"), []byte("one inode, three names"), 0o600)
	must(t, os.Link(p("h1"), p("d/h2")))
	must(t, os.Link(p("h1"), p("h3")))

	must(t, unix.Mkfifo(p("fifo"), 0o640))
	must(t, unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(p("blk"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 200))))
	must(t, unix.Chmod(p("null"), 0o666))

	// Sparse: 16 MiB with two 4 KiB islands of data.
	f, err := os.Create(p("sparse"))
	must(t, err)
	_, err = f.WriteAt(randBytes(1, 4096), 0)
	must(t, err)
	_, err = f.WriteAt(randBytes(2, 4096), 8<<20)
	must(t, err)
	must(t, f.Truncate(16<<20))
	must(t, f.Close())

	// Large enough to be split between workers.
	writeFile(t, p("big"), randBytes(3, 3*chunkSize+12345), 0o644)
	writeFile(t, p("empty-file"), nil, 0o400)

	for _, n := range []string{"d/setuid", "setgid", "acl", "xattrs", "link", "dangling", "h1", "fifo", "null", "blk", "sparse", "big", "empty/deeper/still", "empty/deeper"} {
		setTimes(t, p(n), stamp)
	}
	setTimes(t, p("d"), unix.Timespec{Sec: 1000000000, Nsec: 1})
}

func TestOnceMetadataFidelity(t *testing.T) {
	for _, kind := range []string{"tmpfs", "ext4"} {
		t.Run("tmpfs-to-"+kind, func(t *testing.T) {
			src, dst := trees(t, kind)
			makeEveryKind(t, src)
			ctx := context.Background()
			st, err := Once(ctx, Options{Src: src, Dst: dst, Jobs: 4, Delete: true})
			must(t, err)
			if len(st.Errors) > 0 {
				t.Fatalf("per-path problems: %v", st.Errors)
			}
			requireSame(t, src, dst)

			// Check the kinds one by one too, with lstat and getxattr on both sides.
			for _, n := range []string{".", "d", "sticky", "empty", "empty/deeper/still", "d/setuid", "setgid", "acl", "xattrs", "link", "dangling", "h1", "d/h2", "fifo", "null", "blk", "sparse", "big", "empty-file"} {
				s, d := lstat(t, filepath.Join(src, n)), lstat(t, filepath.Join(dst, n))
				if s.Mode != d.Mode || s.Uid != d.Uid || s.Gid != d.Gid || s.Mtim != d.Mtim || s.Rdev != d.Rdev || s.Size != d.Size && s.Mode&unix.S_IFMT != unix.S_IFDIR {
					t.Errorf("%s: SRC mode %o %d:%d mtime %v rdev %d size %d; DST mode %o %d:%d mtime %v rdev %d size %d",
						n, s.Mode, s.Uid, s.Gid, s.Mtim, s.Rdev, s.Size, d.Mode, d.Uid, d.Gid, d.Mtim, d.Rdev, d.Size)
				}
			}
			for _, x := range [][2]string{{"xattrs", "user.text"}, {"xattrs", "user.binary"}, {"xattrs", "trusted.root"},
				{"acl", "system.posix_acl_access"}, {"d", "system.posix_acl_default"}, {"d", "user.dir"}} {
				if s, d := xattr(t, filepath.Join(src, x[0]), x[1]), xattr(t, filepath.Join(dst, x[0]), x[1]); !bytes.Equal(s, d) {
					t.Errorf("%s %s: SRC %q DST %q", x[0], x[1], s, d)
				}
			}
			h1, h2, h3 := lstat(t, filepath.Join(dst, "h1")), lstat(t, filepath.Join(dst, "d/h2")), lstat(t, filepath.Join(dst, "h3"))
			if h1.Ino != h2.Ino || h1.Ino != h3.Ino || h1.Nlink != 3 {
				t.Errorf("hardlinks not kept: inodes %d %d %d, nlink %d", h1.Ino, h2.Ino, h3.Ino, h1.Nlink)
			}
			if sp := lstat(t, filepath.Join(dst, "sparse")); sp.Blocks*512 > 1<<20 {
				t.Errorf("sparse file lost its holes: %d bytes allocated", sp.Blocks*512)
			}
			if st.FilesCopied < 6 {
				t.Errorf("copied only %d files", st.FilesCopied)
			}

			// Nothing changed: a second pass writes nothing.
			again, err := Once(ctx, Options{Src: src, Dst: dst, Jobs: 4, Delete: true})
			must(t, err)
			if again.FilesCopied != 0 || again.BytesWritten != 0 || again.Created != 0 || again.MetaOnly != 0 || again.Deleted != 0 || again.Linked != 0 {
				t.Errorf("second pass over an unchanged tree did work: %+v", again)
			}
		})
	}
}

func TestOnceDeltaWritesOnlyChangedBlocks(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	big := filepath.Join(src, "big")
	writeFile(t, big, randBytes(7, 64<<20), 0o644)
	_, err := Once(context.Background(), Options{Src: src, Dst: dst, Delete: true})
	must(t, err)
	dstIno := lstat(t, filepath.Join(dst, "big")).Ino

	f, err := os.OpenFile(big, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(randBytes(8, 4096), 32<<20+100)
	must(t, err)
	must(t, f.Close())
	st, err := Once(context.Background(), Options{Src: src, Dst: dst, Delete: true})
	must(t, err)
	if st.BytesWritten > 2*blockSize {
		t.Errorf("4 KiB changed in 64 MiB, but %d bytes written", st.BytesWritten)
	}
	if lstat(t, filepath.Join(dst, "big")).Ino != dstIno {
		t.Errorf("the delta replaced the file instead of patching it")
	}
	requireSame(t, src, dst)
}

func TestOnceDeleteAndExclude(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	for _, n := range []string{"keep.txt", "app.log", "cache/x", "sub/cache/y", "build/out", "sub/build/out"} {
		writeFile(t, filepath.Join(src, n), []byte(n), 0o644)
	}
	opts := Options{Src: src, Dst: dst, Delete: true, Excludes: []string{"*.log", "/build", "cache/"}}
	_, err := Once(context.Background(), opts)
	must(t, err)
	for n, want := range map[string]bool{"keep.txt": true, "app.log": false, "cache": false, "sub/cache": false, "build": false, "sub/build/out": true} {
		_, err := os.Lstat(filepath.Join(dst, n))
		if got := err == nil; got != want {
			t.Errorf("%s at DST: %v, want %v", n, got, want)
		}
	}
	// Extra entries at DST go, except excluded ones; with Delete off, nothing goes.
	writeFile(t, filepath.Join(dst, "extra"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(dst, "extra.log"), []byte("x"), 0o644)
	opts.Delete = false
	_, err = Once(context.Background(), opts)
	must(t, err)
	if _, err := os.Lstat(filepath.Join(dst, "extra")); err != nil {
		t.Errorf("Delete off removed an extra entry")
	}
	opts.Delete = true
	_, err = Once(context.Background(), opts)
	must(t, err)
	if _, err := os.Lstat(filepath.Join(dst, "extra")); !os.IsNotExist(err) {
		t.Errorf("extra entry kept: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "extra.log")); err != nil {
		t.Errorf("an excluded entry at DST was deleted")
	}
}

func TestOnceNoSpace(t *testing.T) {
	testutil.RequireRoot(t)
	src := filepath.Join(testutil.MountTmpfs(t), "src")
	small := t.TempDir()
	must(t, unix.Mount("livemig-test", small, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { testutil.Unmount(t, small) })
	writeFile(t, filepath.Join(src, "a"), randBytes(1, 512<<10), 0o644)
	writeFile(t, filepath.Join(src, "b"), randBytes(2, 2<<20), 0o644)
	before := lstat(t, filepath.Join(src, "b"))
	_, err := Once(context.Background(), Options{Src: src, Dst: filepath.Join(small, "dst"), Jobs: 1})
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("want ErrNoSpace wrapping ENOSPC, got %v", err)
	}
	t.Logf("error: %v", err)
	after := lstat(t, filepath.Join(src, "b"))
	if before.Mtim != after.Mtim || before.Ctim != after.Ctim || before.Atim != after.Atim {
		t.Errorf("SRC was touched")
	}
}
