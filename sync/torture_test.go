package sync

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the writer process of the torture and overflow tests,
// and as the mirror inside a user namespace of the watch limit test.
func TestMain(m *testing.M) {
	switch os.Getenv("LIVEMIG_TEST_ROLE") {
	case "writer":
		seed, _ := strconv.ParseInt(os.Getenv("LIVEMIG_SEED"), 10, 64)
		dur, _ := time.ParseDuration(os.Getenv("LIVEMIG_DURATION"))
		os.Exit(tortureWriter(os.Getenv("LIVEMIG_DIR"), seed, dur))
	case "burst":
		n, _ := strconv.Atoi(os.Getenv("LIVEMIG_COUNT"))
		os.Exit(burstWriter(os.Getenv("LIVEMIG_DIR"), n))
	case "watch-limit":
		os.Exit(watchLimitMirror(os.Getenv("LIVEMIG_SRC"), os.Getenv("LIVEMIG_DST")))
	}
	os.Exit(m.Run())
}

// writer starts this test binary in one of its writer roles, as a separate process.
func writer(t *testing.T, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return testutil.Start(t, cmd)
}

// tortureWriter changes the tree under dir at random until dur has passed: creates,
// writes, appends, truncates, renames of files and directories, deletes, chmods,
// symlinks, hardlinks. Operations on paths a previous one removed simply fail; every
// open is non-blocking, since a name may have become a fifo.
func tortureWriter(dir string, seed int64, dur time.Duration) int {
	r := rand.New(rand.NewSource(seed))
	dirs := []string{dir}
	var files []string
	pick := func(list []string) string { return list[r.Intn(len(list))] }
	name := func() string { return fmt.Sprintf("n%d", r.Intn(60)) }
	buf := make([]byte, 256<<10)
	r.Read(buf)
	data := func(max int) []byte { n := r.Intn(max + 1); off := r.Intn(len(buf) - n + 1); return buf[off : off+n] }
	deadline := time.Now().Add(dur)
	ops := 0
	for time.Now().Before(deadline) {
		ops++
		if ops%64 == 0 {
			time.Sleep(time.Millisecond) // a busy program, not a fork bomb
		}
		switch op := r.Intn(100); {
		case op < 15 || len(files) == 0:
			p := filepath.Join(pick(dirs), name())
			if f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NONBLOCK, 0o644); err == nil {
				_, _ = f.Write(data(64 << 10))
				f.Close()
				files = append(files, p)
			}
		case op < 30:
			if f, err := os.OpenFile(pick(files), os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
				_, _ = f.WriteAt(data(16<<10), int64(r.Intn(64<<10)))
				f.Close()
			}
		case op < 40:
			if f, err := os.OpenFile(pick(files), os.O_WRONLY|os.O_APPEND|unix.O_NONBLOCK, 0); err == nil {
				_, _ = f.Write(data(8 << 10))
				f.Close()
			}
		case op < 45:
			_ = os.Truncate(pick(files), int64(r.Intn(32<<10)))
		case op < 55:
			to := filepath.Join(pick(dirs), name())
			if os.Rename(pick(files), to) == nil {
				files = append(files, to)
			}
		case op < 60 && len(dirs) > 1:
			from, to := pick(dirs[1:]), filepath.Join(pick(dirs), name())
			if !strings.HasPrefix(to+"/", from+"/") && os.Rename(from, to) == nil {
				for i, d := range dirs {
					if d == from || strings.HasPrefix(d, from+"/") {
						dirs[i] = to + d[len(from):]
					}
				}
				for i, f := range files {
					if strings.HasPrefix(f, from+"/") {
						files[i] = to + f[len(from):]
					}
				}
			}
		case op < 66:
			_ = os.Remove(pick(files))
		case op < 68 && len(dirs) > 1:
			// Only a directory: RemoveAll would open a fifo left at a stale name, and block.
			if p := pick(dirs[1:]); isDir(p) {
				_ = os.RemoveAll(p)
			}
		case op < 76:
			p := filepath.Join(pick(dirs), name())
			if len(dirs) < 40 && os.Mkdir(p, 0o755) == nil {
				dirs = append(dirs, p)
			}
		case op < 84:
			_ = os.Chmod(pick(files), os.FileMode(0o600|r.Intn(0o200)))
		case op < 86:
			_ = os.Chmod(pick(dirs), os.FileMode(0o700|r.Intn(0o100)))
		case op < 90:
			p := filepath.Join(pick(dirs), name())
			_ = os.Remove(p)
			_ = os.Symlink(pick(files), p)
		case op < 94:
			p := filepath.Join(pick(dirs), name())
			if os.Link(pick(files), p) == nil {
				files = append(files, p)
			}
		case op < 96:
			_ = os.Chown(pick(files), r.Intn(3)+1000, r.Intn(3)+1000)
		case op < 98:
			_ = unix.Setxattr(pick(files), "user.t", data(64), 0)
		default:
			_ = unix.Mkfifo(filepath.Join(pick(dirs), name()), 0o644)
		}
	}
	fmt.Fprintf(os.Stderr, "torture writer: %d operations\n", ops)
	return 0
}

func isDir(p string) bool {
	st, err := os.Lstat(p)
	return err == nil && st.IsDir()
}

func TestTortureFollow(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	seed := time.Now().UnixNano()
	if s := os.Getenv("LIVEMIG_TORTURE_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	dur := 20 * time.Second
	if d, err := time.ParseDuration(os.Getenv("LIVEMIG_TORTURE_DURATION")); err == nil {
		dur = d
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("torture seed %d (rerun with LIVEMIG_TORTURE_SEED=%d)", seed, seed)
		}
	})
	m := follow(t, Options{Src: src, Dst: dst, Delete: true, Jobs: 2})
	cmd := writer(t, "LIVEMIG_TEST_ROLE=writer", "LIVEMIG_DIR="+src,
		fmt.Sprintf("LIVEMIG_SEED=%d", seed), "LIVEMIG_DURATION="+dur.String())
	if err := cmd.Wait(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	took := eventuallySame(t, src, dst, 2*time.Second)
	st := m.Stats()
	t.Logf("seed %d: identical %v after the writer stopped; %d files copied, %d renames replayed, %d links, %d deleted, %d overflows, %d problems",
		seed, took, st.FilesCopied, st.Renamed, st.Linked, st.Deleted, st.Overflows, st.Problems)
	for _, e := range st.Errors {
		t.Logf("problem: %v", e)
	}
}

// burstWriter creates n files of 1 KiB, each written and closed, as fast as it can.
func burstWriter(dir string, n int) int {
	payload := make([]byte, 1024)
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%10))
		_ = os.Mkdir(sub, 0o755)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", i)), payload, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// setSysctl writes a value under /proc/sys and restores the old one at cleanup.
func setSysctl(t *testing.T, name, value string) (restore func()) {
	path := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	old, err := os.ReadFile(path)
	must(t, err)
	must(t, os.WriteFile(path, []byte(value), 0o644))
	done := false
	restore = func() {
		if !done {
			done = true
			must(t, os.WriteFile(path, old, 0o644))
		}
	}
	t.Cleanup(restore)
	return restore
}

func TestOverflowRescanConverges(t *testing.T) {
	src, dst := trees(t, "tmpfs")
	// The queue length is fixed when an inotify instance is made: shrink it just for
	// the mirror's, and put the system's back right away.
	restore := setSysctl(t, "fs.inotify.max_queued_events", "16")
	m := follow(t, Options{Src: src, Dst: dst, Delete: true})
	restore()
	cmd := writer(t, "LIVEMIG_TEST_ROLE=burst", "LIVEMIG_DIR="+src, "LIVEMIG_COUNT=3000")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("burst writer: %v", err)
	}
	eventuallySame(t, src, dst, 5*time.Second)
	if st := m.Stats(); st.Overflows == 0 || st.Passes < 2 {
		t.Fatalf("no overflow seen, the test proves nothing: %+v", st)
	} else {
		t.Logf("%d overflows, %d passes", st.Overflows, st.Passes)
	}
}

// watchLimitMirror runs inside a user namespace whose inotify watch limit is tiny.
func watchLimitMirror(src, dst string) int {
	if err := os.WriteFile("/proc/sys/user/max_inotify_watches", []byte("5"), 0o644); err != nil {
		fmt.Println("set limit:", err)
		return 3
	}
	m, err := New(Options{Src: src, Dst: dst})
	if err != nil {
		fmt.Println("new:", err)
		return 3
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = m.Follow(ctx)
	var wl *WatchLimitError
	if !errors.As(err, &wl) {
		fmt.Println("want a WatchLimitError, got:", err)
		return 1
	}
	fmt.Println(err)
	return 0
}

func TestWatchLimitIsAClearError(t *testing.T) {
	testutil.RequireTool(t, "unshare")
	src, dst := trees(t, "tmpfs")
	for i := range 20 {
		must(t, os.MkdirAll(filepath.Join(src, fmt.Sprintf("d%d", i)), 0o755))
	}
	// A user namespace has its own watch limit: lowering it there leaves every other
	// program on the machine alone.
	cmd := exec.Command("unshare", "--user", "--map-root-user", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LIVEMIG_TEST_ROLE=watch-limit", "LIVEMIG_SRC="+src, "LIVEMIG_DST="+dst)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	msg := string(out)
	if !strings.Contains(msg, "fs.inotify.max_user_watches") || !strings.Contains(msg, "21 directories") {
		t.Fatalf("unclear error: %s", msg)
	}
	t.Logf("%s", strings.TrimSpace(msg))
}
