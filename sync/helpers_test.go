package sync

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
	"golang.org/x/sys/unix"
)

// trees returns a fresh SRC on tmpfs and a DST on the given kind of filesystem.
func trees(t *testing.T, dstKind string) (src, dst string) {
	t.Helper()
	src = filepath.Join(testutil.MountTmpfs(t), "src")
	switch dstKind {
	case "tmpfs":
		dst = filepath.Join(testutil.MountTmpfs(t), "dst")
	case "ext4":
		dst = filepath.Join(testutil.MountExt4(t, 256), "dst")
	default:
		t.Fatalf("unknown filesystem kind %q", dstKind)
	}
	must(t, os.Mkdir(src, 0o755))
	return src, dst
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, data, mode))
	must(t, os.Chmod(path, mode)) // WriteFile's mode passes through the umask
}

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// posixACL encodes an access ACL as the kernel stores it in system.posix_acl_access.
func posixACL(entries ...[3]uint32) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, uint32(2)) // POSIX_ACL_XATTR_VERSION
	for _, e := range entries {
		_ = binary.Write(&b, binary.LittleEndian, uint16(e[0])) // tag
		_ = binary.Write(&b, binary.LittleEndian, uint16(e[1])) // perm
		_ = binary.Write(&b, binary.LittleEndian, e[2])         // id
	}
	return b.Bytes()
}

const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	aclUndefID  = 0xffffffff
)

// requireSame fails the test with every difference Verify finds.
func requireSame(t testing.TB, src, dst string) {
	t.Helper()
	diffs, err := Verify(context.Background(), src, dst)
	must(t, err)
	for i, d := range diffs {
		if i == 30 {
			t.Errorf("... and %d more", len(diffs)-30)
			break
		}
		t.Errorf("difference: %s", d)
	}
	if len(diffs) > 0 {
		t.FailNow()
	}
}

// eventuallySame waits until Verify finds no difference, failing with the last list.
func eventuallySame(t testing.TB, src, dst string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var diffs []Difference
	for {
		var err error
		diffs, err = Verify(context.Background(), src, dst)
		must(t, err)
		if len(diffs) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, d := range diffs {
		if i == 30 {
			t.Errorf("... and %d more", len(diffs)-30)
			break
		}
		t.Errorf("difference after %v: %s", timeout, d)
	}
	t.FailNow()
	return 0
}

func lstat(t testing.TB, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(path, &st))
	return st
}

func xattr(t testing.TB, path, name string) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, name, err)
	}
	return buf[:n]
}
