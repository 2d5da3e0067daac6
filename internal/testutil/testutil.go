// Package testutil holds what livemig's tests share: the root requirement, C programs
// built at test time, and real filesystems (tmpfs, loop-mounted ext4) that are unmounted
// again when the test ends, also when it fails.
//
// It knows nothing about livemig's packages; tests import it, production code never does.
package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips a test that needs root, unless LIVEMIG_REQUIRE_ROOT=1 is set (as
// .ci/run does): then the missing privilege fails the test, so CI cannot pass by skipping.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("LIVEMIG_REQUIRE_ROOT") == "1" {
		t.Fatal("this test needs root and LIVEMIG_REQUIRE_ROOT=1 forbids skipping it")
	}
	t.Skip("needs root (set LIVEMIG_REQUIRE_ROOT=1 to make this a failure)")
}

// RequireTool is RequireRoot for an external program the test drives.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("LIVEMIG_REQUIRE_ROOT") == "1" {
		t.Fatalf("%s is not installed (.ci/run should install it): %v", name, err)
	}
	t.Skipf("%s is not installed", name)
	return ""
}

var (
	buildMu    sync.Mutex
	buildDir   string
	buildCache = map[string]string{}
)

// BuildC compiles one C source file with gcc and returns the binary's path. Identical
// sources and flags are built once per test binary.
func BuildC(t testing.TB, src string, flags ...string) string {
	t.Helper()
	RequireTool(t, "gcc")
	h := sha256.Sum256([]byte(src + "\x00" + strings.Join(flags, "\x00")))
	key := hex.EncodeToString(h[:8])

	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := buildCache[key]; ok {
		return bin
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "livemig-cbuild-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	srcPath := filepath.Join(buildDir, key+".c")
	bin := filepath.Join(buildDir, key)
	if err := os.WriteFile(srcPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-O1", "-Wall", "-o", bin, srcPath}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	buildCache[key] = bin
	return bin
}

// MountTmpfs mounts a fresh tmpfs on a temporary directory and unmounts it at cleanup.
func MountTmpfs(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("livemig-test", dir, "tmpfs", 0, "size=512m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { Unmount(t, dir) })
	return dir
}

// MountExt4 creates an ext4 image of sizeMiB, loop-mounts it on a temporary directory
// and unmounts it (freeing the loop device) at cleanup.
func MountExt4(t testing.TB, sizeMiB int) string {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "mkfs.ext4")
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(sizeMiB)<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", img, err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop %s %s: %v\n%s", img, dir, err, out)
	}
	t.Cleanup(func() { Unmount(t, dir) })
	return dir
}

// Unmount unmounts dir, retrying briefly while it is busy (a process of the test may
// still be exiting), and lazily as a last resort so that no mount outlives the test.
func Unmount(t testing.TB, dir string) {
	t.Helper()
	var err error
	for i := 0; i < 50; i++ {
		if err = unix.Unmount(dir, 0); err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("unmount %s: %v (detaching lazily)", dir, err)
	_ = unix.Unmount(dir, unix.MNT_DETACH)
}

// Start runs a command as a child of the test and kills it (by its pid) at cleanup.
func Start(t testing.TB, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// Eventually polls cond every few milliseconds until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
