package cutover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/internal/testutil"
	livesync "github.com/livemig/livemig/sync"
)

// lineWriter has its cwd in argv[1] and appends line N to argv[2] (a path relative to
// the cwd, opened once) every 2 ms. With argv[3] = "fork" it also forks a short-lived
// child every iteration, which inherits the fd and the cwd.
const lineWriter = `
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (chdir(argv[1])) { perror("chdir"); return 1; }
	int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0) { perror("open"); return 1; }
	int forking = argc > 3 && !strcmp(argv[3], "fork");
	printf("ready\n");
	fflush(stdout);
	struct timespec ts = {0, 2000000};
	for (unsigned long n = 0;; n++) {
		char line[32];
		int len = snprintf(line, sizeof line, "%lu\n", n);
		if (write(fd, line, len) != len) { perror("write"); return 1; }
		if (forking) {
			pid_t c = fork();
			if (c == 0) { nanosleep(&ts, NULL); _exit(0); }
			while (waitpid(-1, NULL, WNOHANG) > 0) {}
		}
		nanosleep(&ts, NULL);
	}
}
`

// onceDelta is a final delta without a running mirror: one full pass comparing content.
type onceDelta struct{ src, dst string }

func (d onceDelta) FinalDelta(ctx context.Context, _ []string) error {
	_, err := livesync.Once(ctx, livesync.Options{Src: d.src, Dst: d.dst, Delete: true, Checksum: true})
	return err
}

func (onceDelta) Release() error { return nil }

// startWriters starts n line writers in src, writing out-0 ... out-(n-1); the first one
// forks children all the time when forking is set.
func startWriters(t *testing.T, src string, n int, forking bool) []*child {
	t.Helper()
	bin := testutil.BuildC(t, lineWriter)
	var ws []*child
	for i := 0; i < n; i++ {
		args := []string{src, fmt.Sprintf("out-%d", i)}
		if forking && i == 0 {
			args = append(args, "fork")
		}
		ws = append(ws, startChild(t, bin, args...))
	}
	time.Sleep(30 * time.Millisecond)
	return ws
}

// assertCountingLines checks that dir/out-i holds lines 0..N, each once, in order.
func assertCountingLines(t *testing.T, dir string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		path := filepath.Join(dir, fmt.Sprintf("out-%d", i))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(lines) < 10 {
			t.Fatalf("%s: only %d lines", path, len(lines))
		}
		for j, l := range lines {
			if l != strconv.Itoa(j) {
				t.Fatalf("%s: line %d is %q (a line lost or doubled)", path, j, l)
			}
		}
	}
}

func stopWriters(ws []*child) {
	for _, w := range ws {
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
	}
}

// Twenty writers, one of them forking children all the time (also during the freeze),
// are all moved, none loses or doubles a line, and no child is left stopped.
func TestTwentyWritersOneForking(t *testing.T) {
	testutil.RequireRoot(t)
	src, dst := testutil.MountTmpfs(t), testutil.MountExt4(t, 32)
	ws := startWriters(t, src, 20, true)
	rep, err := Run(context.Background(), Config{Src: src, Dst: dst, Delta: onceDelta{src, dst}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.Result != ResultDone || len(rep.Processes) < 20 {
		t.Fatalf("result %s with %d processes, want done with at least 20", rep.Result, len(rep.Processes))
	}
	for _, w := range ws {
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", w.pid())); cwd != dst {
			t.Errorf("pid %d: cwd %s, want %s", w.pid(), cwd, dst)
		}
	}
	time.Sleep(50 * time.Millisecond)
	for _, p := range rep.Processes {
		if testutil.AllStopped(p.PID) {
			t.Errorf("pid %d (%s) is still stopped after the cutover", p.PID, p.Comm)
		}
	}
	stopWriters(ws)
	assertCountingLines(t, dst, 20)
}

// When the swap of one process fails, every process is put back on the old storage and
// resumed, and no line is lost: the new file of the last process is replaced by a fifo
// just before its swap, which the swap refuses.
func TestRollbackWhenOneSwapFails(t *testing.T) {
	testutil.RequireRoot(t)
	cases := []struct {
		mode    FreezeMode
		remount bool
	}{{FreezeSigstop, false}, {FreezePtrace, false}, {FreezeSigstop, true}}
	for _, tc := range cases {
		mode := tc.mode
		t.Run(fmt.Sprintf("%s/remount=%v", mode, tc.remount), func(t *testing.T) {
			src, dst := testutil.MountTmpfs(t), testutil.MountTmpfs(t)
			devOf := func(path string) uint64 {
				var st unix.Stat_t
				if err := unix.Stat(path, &st); err != nil {
					t.Fatal(err)
				}
				return st.Dev
			}
			oldDev, newDev := devOf(src), devOf(dst)
			ws := startWriters(t, src, 3, false)
			victim := ws[2].pid()
			fdsBefore := map[int]int{}
			for _, w := range ws {
				fdsBefore[w.pid()] = countFDs(w.pid())
			}
			hook := func(point string, pid int) error {
				if point == "before-swap" && pid == victim {
					target := filepath.Join(dst, "out-2")
					if tc.remount { // the new filesystem is at SRC's path by now
						target = filepath.Join(src, "out-2")
					}
					if err := os.Remove(target); err != nil {
						return err
					}
					return unix.Mkfifo(target, 0o644)
				}
				return nil
			}
			rep, err := Run(context.Background(), Config{Src: src, Dst: dst, Freeze: mode, Remount: tc.remount, Delta: onceDelta{src, dst}, Hook: hook})
			if err == nil || !strings.Contains(err.Error(), "is a fifo") {
				t.Fatalf("Run: %v, want the swap of pid %d to fail on the fifo", err, victim)
			}
			if rep.Result != ResultRolledBack {
				t.Errorf("result %s, want %s", rep.Result, ResultRolledBack)
			}
			if devOf(src) != oldDev || devOf(dst) != newDev {
				t.Errorf("filesystems not back in place after rollback: SRC on %d (want %d), DST on %d (want %d)", devOf(src), oldDev, devOf(dst), newDev)
			}
			for _, w := range ws {
				pid := w.pid()
				if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != src {
					t.Errorf("pid %d: cwd %s after rollback, want %s", pid, cwd, src)
				}
				if fd3, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pid)); !strings.HasPrefix(fd3, src+"/") {
					t.Errorf("pid %d: fd 3 -> %s after rollback, want under %s", pid, fd3, src)
				}
				if n := countFDs(pid); n != fdsBefore[pid] {
					t.Errorf("pid %d: %d fds after rollback, %d before (a spare left behind?)", pid, n, fdsBefore[pid])
				}
			}
			before := fileSizes(src, 3)
			time.Sleep(50 * time.Millisecond)
			for i, size := range fileSizes(src, 3) {
				if size <= before[i] {
					t.Errorf("writer %d does not run after the rollback", i)
				}
			}
			stopWriters(ws)
			assertCountingLines(t, src, 3)
		})
	}
}

func countFDs(pid int) int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(entries)
}

func fileSizes(dir string, n int) []int64 {
	var sizes []int64
	for i := 0; i < n; i++ {
		sizes = append(sizes, testutil.FileSize(filepath.Join(dir, fmt.Sprintf("out-%d", i))))
	}
	return sizes
}

// If livemig is killed (-9) right after the freeze, or right after the swap of the first
// process, the guardian resumes every frozen process within a second.
func TestGuardianResumesWhenCutoverIsKilled(t *testing.T) {
	testutil.RequireRoot(t)
	for _, point := range []string{"frozen", "swapped"} {
		t.Run(point, func(t *testing.T) {
			src, dst := testutil.MountTmpfs(t), testutil.MountTmpfs(t)
			ws := startWriters(t, src, 3, false)
			cmd := exec.Command("/proc/self/exe")
			cmd.Env = append(os.Environ(), helperRoleEnv+"=cutover", "LIVEMIG_TEST_SRC="+src, "LIVEMIG_TEST_DST="+dst, "LIVEMIG_TEST_STALL="+point)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			testutil.Start(t, cmd)
			buf := make([]byte, 64)
			n, _ := out.Read(buf)
			if !strings.HasPrefix(string(buf[:n]), "stalled") {
				t.Fatalf("helper said %q, want stalled", buf[:n])
			}
			for _, w := range ws { // (other swaps may still be single-stepping their process)
				testutil.Eventually(t, time.Second, fmt.Sprintf("pid %d frozen while livemig stalls", w.pid()), func() bool {
					return testutil.AllStopped(w.pid())
				})
			}
			if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			for _, w := range ws {
				testutil.Eventually(t, time.Second-time.Since(killed), fmt.Sprintf("pid %d running again", w.pid()), func() bool {
					return testutil.NoneStopped(w.pid())
				})
			}
			t.Logf("every process ran again %v after the kill", time.Since(killed).Round(time.Millisecond))
		})
	}
}

// runCutoverHelper is the "cutover" role of the test binary (see runHelper): a cutover of
// $LIVEMIG_TEST_SRC that stalls at $LIVEMIG_TEST_STALL, saying "stalled", until killed.
func runCutoverHelper() int {
	src, dst, stall := os.Getenv("LIVEMIG_TEST_SRC"), os.Getenv("LIVEMIG_TEST_DST"), os.Getenv("LIVEMIG_TEST_STALL")
	hook := func(point string, pid int) error {
		if point == stall {
			fmt.Println("stalled")
			select {}
		}
		return nil
	}
	_, err := Run(context.Background(), Config{Src: src, Dst: dst, Delta: onceDelta{src, dst}, Hook: hook})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
