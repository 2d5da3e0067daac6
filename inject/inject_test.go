package inject

import (
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
)

// Case 1: a busy loop keeps counting without a gap or a repeat across attach, injected
// getpid calls and detach; every thread is in tracing stop while attached.
func TestGetpidInBusyLoop(t *testing.T) {
	testutil.RequireRoot(t)
	c := startChild(t, nil, buildTestdata(t, "counter"))
	for i := 0; i < 3; i++ {
		c.expect(t, "")
	}

	p := attach(t, c.pid)
	if st := stateOf(t, c.pid); st != 't' {
		t.Errorf("state while attached = %c, want t (tracing stop)", st)
	}
	for i := 0; i < 5; i++ {
		got, err := p.Syscall(unix.SYS_GETPID)
		if err != nil {
			t.Fatalf("getpid: %v", err)
		}
		if int(got) != c.pid {
			t.Fatalf("injected getpid = %d, want %d", got, c.pid)
		}
	}
	detach(t, p)

	prev := -1
	for i := 0; i < 200; i++ {
		n, err := strconv.Atoi(c.expect(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		if prev >= 0 && n != prev+1 {
			t.Fatalf("output jumped from %d to %d", prev, n)
		}
		prev = n
	}
}

// Case 2: a thread blocked in a syscall goes on as if nothing happened: the call is
// restarted, never fails with EINTR, and still gets what arrives after detach.
func TestBlockedSyscallsResume(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildTestdata(t, "blocker")
	cases := []struct {
		mode    string
		args    func(t *testing.T) []string
		unblock func(t *testing.T, c *child, args []string)
		want    string
	}{
		{mode: "read", unblock: func(t *testing.T, c *child, _ []string) { c.send(t, "hello") }, want: "ok got hello"},
		{mode: "nanosleep", args: func(*testing.T) []string { return []string{"400"} }, want: "ok slept"},
		{mode: "futex", unblock: func(t *testing.T, c *child, _ []string) { c.send(t, "wake") }, want: "ok woken"},
		{mode: "accept",
			args: func(t *testing.T) []string { return []string{filepath.Join(t.TempDir(), "sock")} },
			unblock: func(t *testing.T, c *child, args []string) {
				conn, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(conn)
				if err := unix.Connect(conn, &unix.SockaddrUnix{Name: args[0]}); err != nil {
					t.Fatalf("connect: %v", err)
				}
			},
			want: "ok accepted"},
		{mode: "epoll", unblock: func(t *testing.T, c *child, _ []string) { c.send(t, "x") }, want: "ok events 1"},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			var args []string
			if tc.args != nil {
				args = tc.args(t)
			}
			c := startChild(t, nil, bin, append([]string{tc.mode}, args...)...)
			c.expect(t, "ready")
			waitState(t, c.pid, "S")
			start := time.Now()

			p := attach(t, c.pid)
			for i := 0; i < 10; i++ {
				if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
					t.Fatalf("getpid: %v", err)
				}
			}
			if _, err := p.WriteScratch([]byte("scratch")); err != nil {
				t.Fatalf("WriteScratch: %v", err)
			}
			detach(t, p)

			if tc.unblock != nil {
				waitState(t, c.pid, "S")
				c.noLine(t, 20*time.Millisecond)
				tc.unblock(t, c, args)
			}
			line := c.expect(t, tc.want)
			if tc.mode == "nanosleep" {
				ms, _ := strconv.Atoi(strings.Fields(line)[2])
				if ms < 395 || time.Since(start) > 2*time.Second {
					t.Errorf("nanosleep(400ms) reported %d ms: not resumed as if nothing happened", ms)
				}
			}
		})
	}
}

// A signal sent while we hold the process is delivered after detach, exactly once, and the
// interrupted read is restarted rather than failing.
func TestSignalArrivingWhileAttachedIsDelivered(t *testing.T) {
	testutil.RequireRoot(t)
	c := startChild(t, nil, buildTestdata(t, "blocker"), "read")
	c.expect(t, "ready")
	waitState(t, c.pid, "S")

	p := attach(t, c.pid)
	if err := unix.Kill(c.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
			t.Fatalf("getpid: %v", err)
		}
	}
	detach(t, p)
	waitState(t, c.pid, "S")
	c.send(t, "after")
	c.expect(t, "ok got after usr1=1")
}

// A process stopped by SIGSTOP before we attach is still stopped after detach, and its
// parent sees nothing of the attach either way.
func TestStoppedProcessStaysStopped(t *testing.T) {
	testutil.RequireRoot(t)
	c := startChild(t, nil, buildTestdata(t, "counter"))
	c.expect(t, "")
	if err := unix.Kill(c.pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, c.pid, "T")
	time.Sleep(30 * time.Millisecond) // let lines printed before the stop arrive
	for len(c.lines) > 0 {
		<-c.lines
	}

	p := attach(t, c.pid)
	if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
		t.Fatalf("getpid: %v", err)
	}
	detach(t, p)

	time.Sleep(50 * time.Millisecond)
	if st := stateOf(t, c.pid); st != 'T' {
		t.Fatalf("state after detach = %c, want T: we resumed what we did not stop", st)
	}
	c.noLine(t, 50*time.Millisecond)
	if err := unix.Kill(c.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "")
}

func TestParentObservesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	c := startChild(t, nil, buildTestdata(t, "watcher"))
	var busy int
	if _, err := fmt.Sscanf(c.expect(t, "child "), "child %d", &busy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Kill(busy, unix.SIGKILL) })

	for i := 0; i < 3; i++ {
		p := attach(t, busy)
		if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
			t.Fatalf("getpid: %v", err)
		}
		detach(t, p)
	}
	c.noLine(t, 100*time.Millisecond)
}

// Case 3, C: 8 busy pthreads and a writer thread; all stop, fd 3 is swapped to a new file,
// and after detach every thread keeps counting into the new file.
func TestMultiThreadedC(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	oldPath, newPath := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	c := startChild(t, nil, buildTestdata(t, "threads"), oldPath)
	c.expect(t, "ready")
	testutil.Eventually(t, 5*time.Second, "9 threads", func() bool {
		tids, _ := listThreads(c.pid)
		return len(tids) == 9
	})
	checkSwapKeepsEveryThreadWorking(t, c.pid, 3, 9, oldPath, newPath, 8)
}

// Case 3, Go: a Go program with GOMAXPROCS=4 and busy goroutines.
func TestMultiThreadedGo(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	oldPath, newPath := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	c := startChild(t, []string{"GOMAXPROCS=4"}, buildGoWriter(t), oldPath)
	var fd int
	if _, err := fmt.Sscanf(c.expect(t, "fd "), "fd %d", &fd); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "at least 5 threads", func() bool {
		tids, _ := listThreads(c.pid)
		return len(tids) >= 5
	})
	checkSwapKeepsEveryThreadWorking(t, c.pid, fd, 5, oldPath, newPath, 4)
}

// checkSwapKeepsEveryThreadWorking attaches, checks that all threads are stopped, swaps fd
// from oldPath to newPath, detaches, and checks that the writer's lines now land in
// newPath with every one of the counters still growing.
func checkSwapKeepsEveryThreadWorking(t *testing.T, pid, fd, minThreads int, oldPath, newPath string, counters int) {
	t.Helper()
	p := attach(t, pid)
	tids, _ := listThreads(pid)
	if len(p.Threads()) != len(tids) || len(tids) < minThreads {
		t.Fatalf("attached %d threads, process has %v", len(p.Threads()), tids)
	}
	for _, tid := range tids {
		if st := stateOf(t, tid); st != 't' {
			t.Errorf("thread %d in state %c while attached, want t", tid, st)
		}
	}
	copyFile(t, oldPath, newPath) // the final delta, while everything is stopped
	swapLine := len(readLines(t, oldPath))
	if err := p.Swap(fd, newPath); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if got := readFdInfo(t, pid, fd).target; got != newPath {
		t.Fatalf("/proc/%d/fd/%d -> %s, want %s", pid, fd, got, newPath)
	}
	oldSize := fileSize(t, oldPath)
	detach(t, p)

	testutil.Eventually(t, 5*time.Second, "a line written after the swap", func() bool {
		return len(readLines(t, newPath)) > swapLine
	})
	first := parseCounts(t, readLines(t, newPath)[swapLine])
	if len(first) != counters {
		t.Fatalf("malformed first line in %s: %v", newPath, first)
	}
	testutil.Eventually(t, 5*time.Second, "every thread counting after detach", func() bool {
		lines := readLines(t, newPath)
		last := parseCounts(t, lines[len(lines)-1])
		for i := range first {
			if last[i] <= first[i] {
				return false
			}
		}
		return true
	})
	for _, line := range readLines(t, newPath) {
		parseCounts(t, line) // no hole, no torn line where the writes moved over
	}
	if got := fileSize(t, oldPath); got != oldSize {
		t.Errorf("old file grew after the swap: %d -> %d bytes", oldSize, got)
	}
}

// Case 4: swap of an O_APPEND fd, an O_RDWR fd at offset 12345 and an O_CLOEXEC fd keeps
// flags and offsets, writes continue in the new files, and Restore puts the old ones back.
func TestSwapKeepsFlagsAndOffsetsAndRestores(t *testing.T) {
	testutil.RequireRoot(t)
	oldDir, newDir := testutil.MountTmpfs(t), testutil.MountExt4(t, 32)
	names := []string{"append", "rdwr", "cloexec"}
	initial := map[string][]byte{"append": []byte("a0\n"), "rdwr": make([]byte, 20000), "cloexec": nil}
	var oldPaths, newPaths []string
	for _, n := range names {
		oldPaths = append(oldPaths, filepath.Join(oldDir, n))
		newPaths = append(newPaths, filepath.Join(newDir, n))
		if err := os.WriteFile(oldPaths[len(oldPaths)-1], initial[n], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := startChild(t, nil, buildTestdata(t, "fdkinds"), oldPaths...)
	var fds [3]int
	if _, err := fmt.Sscanf(c.expect(t, "fds "), "fds %d %d %d", &fds[0], &fds[1], &fds[2]); err != nil {
		t.Fatal(err)
	}
	c.send(t, "w")
	c.expect(t, "done")
	for i := range names { // what a mirror would have copied by now
		copyFile(t, oldPaths[i], newPaths[i])
	}
	fdsBefore := countFds(t, c.pid)

	var before [3]fdInfo
	var spares [3]Spare
	p := attach(t, c.pid)
	for i, fd := range fds {
		before[i] = readFdInfo(t, c.pid, fd)
		var err error
		if spares[i], err = p.Spare(fd); err != nil {
			t.Fatalf("Spare(%d): %v", fd, err)
		}
		if err := p.Swap(fd, newPaths[i]); err != nil {
			t.Fatalf("Swap(%d): %v", fd, err)
		}
	}
	detach(t, p)
	for i, fd := range fds {
		after := readFdInfo(t, c.pid, fd)
		if after.target != newPaths[i] || after.flags != before[i].flags || after.pos != before[i].pos {
			t.Errorf("fd %d (%s): before swap %+v, after %+v", fd, names[i], before[i], after)
		}
	}
	if !spares[2].Cloexec || spares[0].Cloexec {
		t.Errorf("spares recorded FD_CLOEXEC wrongly: %+v", spares)
	}

	c.send(t, "w")
	c.expect(t, "done")
	wantAppend := "a0\nA\nA\n"
	wantRdwr := make([]byte, 20000)
	copy(wantRdwr[12345:], "B\nB\n")
	assertFile(t, newPaths[0], []byte(wantAppend))
	assertFile(t, newPaths[1], wantRdwr)
	assertFile(t, newPaths[2], []byte("C\nC\n"))
	assertFile(t, oldPaths[2], []byte("C\n")) // the old files saw nothing more

	p = attach(t, c.pid)
	for i := range fds {
		if err := p.Restore(spares[i]); err != nil {
			t.Fatalf("Restore: %v", err)
		}
	}
	detach(t, p)
	for i, fd := range fds {
		after := readFdInfo(t, c.pid, fd)
		if after.target != oldPaths[i] || after.flags != before[i].flags || after.pos != before[i].pos {
			t.Errorf("fd %d (%s) after restore: %+v, want as before the swap %+v", fd, names[i], after, before[i])
		}
	}
	if got := countFds(t, c.pid); got != fdsBefore {
		t.Errorf("%d fds open after restore, %d before: a spare leaked", got, fdsBefore)
	}
	c.send(t, "w")
	c.expect(t, "done")
	assertFile(t, oldPaths[2], []byte("C\nC\n"))
}

func TestChdirAndRestore(t *testing.T) {
	testutil.RequireRoot(t)
	oldDir, newDir := testutil.MountTmpfs(t), testutil.MountTmpfs(t)
	cmd := exec.Command(buildTestdata(t, "blocker"), "read")
	cmd.Dir = oldDir
	c := startCmd(t, cmd)
	c.expect(t, "ready")
	cwd := func() string {
		s, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", c.pid))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	p := attach(t, c.pid)
	spare, err := p.SpareCwd()
	if err != nil {
		t.Fatalf("SpareCwd: %v", err)
	}
	if err := p.Chdir(newDir); err != nil {
		t.Fatalf("Chdir: %v", err)
	}
	if got := cwd(); got != newDir {
		t.Fatalf("cwd after Chdir = %s, want %s", got, newDir)
	}
	if err := p.Chdir(filepath.Join(newDir, "missing")); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Chdir to a missing directory: %v, want ENOENT", err)
	}
	if err := p.Restore(spare); err != nil {
		t.Fatalf("Restore cwd: %v", err)
	}
	if got := cwd(); got != oldDir {
		t.Fatalf("cwd after Restore = %s, want %s", got, oldDir)
	}
	fds := countFds(t, c.pid)
	if _, err := p.ChdirKeepingSpare(filepath.Join(newDir, "missing")); !errors.Is(err, unix.ENOENT) || countFds(t, c.pid) != fds {
		t.Fatalf("ChdirKeepingSpare to a missing directory: %v, %d fds (%d before); want ENOENT and no spare left", err, countFds(t, c.pid), fds)
	}
	if spare, err = p.ChdirKeepingSpare(newDir); err != nil || cwd() != newDir {
		t.Fatalf("ChdirKeepingSpare: %v, cwd %s", err, cwd())
	}
	if err := p.Restore(spare); err != nil || cwd() != oldDir {
		t.Fatalf("Restore after ChdirKeepingSpare: %v, cwd %s", err, cwd())
	}
	detach(t, p)
	c.send(t, "x")
	c.expect(t, "ok got x")
}

// Case 5: bad input gives a clear error, no hang, and no leaked goroutine.
func TestBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	traced := startChild(t, nil, buildTestdata(t, "traced"))
	var tracee int
	if _, err := fmt.Sscanf(traced.expect(t, "child "), "child %d", &tracee); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Kill(tracee, unix.SIGKILL) })
	goroutines := numGoroutinesSettled(0)

	cases := []struct {
		name string
		pid  int
		is   error
		says string
	}{
		{"no such pid", gone.Process.Pid, ErrNoProcess, "no such process"},
		{"negative pid", -5, ErrNoProcess, "invalid pid"},
		{"livemig itself", os.Getpid(), ErrRefused, "livemig itself"},
		{"init", 1, ErrRefused, "init"},
		{"kernel thread", kernelThread(t), ErrRefused, "kernel thread"},
		{"traced by another", tracee, nil, fmt.Sprintf("already traced by pid %d", traced.pid)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Attach(tc.pid)
			if err == nil {
				p.Detach()
				t.Fatalf("Attach(%d) succeeded", tc.pid)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), strconv.Itoa(tc.pid)) {
				t.Errorf("error %q should name the pid and say %q", err, tc.says)
			}
		})
	}
	var te *TracedError
	if _, err := Attach(tracee); !errors.As(err, &te) || te.TracerPid != traced.pid {
		t.Errorf("Attach of a traced process: %v, want a TracedError naming %d", err, traced.pid)
	}

	t.Run("fd not open and path missing", func(t *testing.T) {
		dir := testutil.MountTmpfs(t)
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, make([]byte, 100), 0o644); err != nil {
			t.Fatal(err)
		}
		c := startChild(t, nil, buildTestdata(t, "fdkinds"), path, path, path)
		var fds [3]int
		fmt.Sscanf(c.expect(t, "fds "), "fds %d %d %d", &fds[0], &fds[1], &fds[2])
		before := readFdInfo(t, c.pid, fds[1])
		p := attach(t, c.pid)
		err := p.Swap(999, path)
		if !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "fd 999") || !strings.Contains(err.Error(), strconv.Itoa(c.pid)) {
			t.Errorf("Swap of a closed fd: %v, want EBADF naming fd and pid", err)
		}
		err = p.Swap(fds[1], filepath.Join(dir, "missing"))
		if !errors.Is(err, unix.ENOENT) {
			t.Errorf("Swap to a missing path: %v, want ENOENT", err)
		}
		fifo := filepath.Join(dir, "fifo")
		if err := unix.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := p.Swap(fds[1], fifo); err == nil || !strings.Contains(err.Error(), "is a fifo") {
			t.Errorf("Swap to a fifo (whose open would block): %v, want a refusal", err)
		}
		detach(t, p)
		if after := readFdInfo(t, c.pid, fds[1]); after != before {
			t.Errorf("failed swap changed the fd: %+v -> %+v", before, after)
		}
		c.send(t, "w")
		c.expect(t, "done")
	})

	t.Run("exit in the middle of an injection", func(t *testing.T) {
		c := startChild(t, nil, buildTestdata(t, "counter"))
		c.expect(t, "")
		p := attach(t, c.pid)
		_, err := p.Syscall(unix.SYS_EXIT_GROUP, 7)
		if !errors.Is(err, ErrExited) {
			t.Errorf("exit_group: %v, want ErrExited", err)
		}
		if _, err := p.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrExited) {
			t.Errorf("call after exit: %v, want ErrExited", err)
		}
		detach(t, p)
		if err := c.cmd.Wait(); err == nil || c.cmd.ProcessState.ExitCode() != 7 {
			t.Errorf("process ended with %v, want exit status 7", err)
		}
	})

	t.Run("killed while attached", func(t *testing.T) {
		c := startChild(t, nil, buildTestdata(t, "threads"), filepath.Join(t.TempDir(), "out"))
		c.expect(t, "ready")
		p := attach(t, c.pid)
		if err := unix.Kill(c.pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrExited) {
			t.Errorf("call into a killed process: %v, want ErrExited", err)
		}
		detach(t, p)
	})

	if after := numGoroutinesSettled(goroutines); after > goroutines {
		t.Errorf("%d goroutines before, %d after: a tracer leaked", goroutines, after)
	}
}

func kernelThread(t *testing.T) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if info, err := readProcInfo(pid); err == nil && info.flags&pfKthread != 0 {
			return pid
		}
	}
	t.Fatal("no kernel thread visible in /proc")
	return 0
}

// Threads created while we attach are caught too: once Attach returns, no thread of the
// process runs.
func TestAttachCatchesThreadsCreatedMeanwhile(t *testing.T) {
	testutil.RequireRoot(t)
	c := startChild(t, nil, buildTestdata(t, "spawner"))
	c.expect(t, "ready")
	for round := 0; round < 20; round++ {
		p := attach(t, c.pid)
		tids, err := listThreads(c.pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, tid := range tids {
			if st := stateOf(t, tid); st != 't' && st != 'Z' && st != 'X' && st != '?' {
				t.Fatalf("round %d: thread %d in state %c after Attach (%d threads held)", round, tid, st, len(p.Threads()))
			}
		}
		detach(t, p)
		testutil.Eventually(t, time.Second, "no thread traced after Detach", func() bool {
			tids, _ := listThreads(c.pid)
			for _, tid := range tids {
				if info, err := readProcInfo(tid); err == nil && info.tracerPid != 0 {
					return false
				}
			}
			return true
		})
	}
}

// Detach leaves no trace: the registers of the blocked syscall, the signal masks, the
// CPU affinity and the memory map are as before, and the spare fds are gone once dropped.
func TestDetachLeavesNoTrace(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, nil, buildTestdata(t, "fdkinds"), path, path, path)
	var fds [3]int
	fmt.Sscanf(c.expect(t, "fds "), "fds %d %d %d", &fds[0], &fds[1], &fds[2])
	waitState(t, c.pid, "S")
	snapshot := func() string {
		var b strings.Builder
		for _, f := range []string{"syscall", "maps"} {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", c.pid, f))
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid))
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "Sig") || strings.HasPrefix(line, "ShdPnd") || strings.HasPrefix(line, "Cpus_allowed") {
				b.WriteString(line + "\n")
			}
		}
		return b.String()
	}
	before, fdsBefore := snapshot(), countFds(t, c.pid)

	p := attach(t, c.pid)
	spare, err := p.Spare(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Swap(fds[1], path); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WriteScratch(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := p.DropSpare(spare); err != nil {
		t.Fatal(err)
	}
	detach(t, p)
	waitState(t, c.pid, "S")
	if after := snapshot(); after != before {
		t.Errorf("process state changed across attach/detach:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := countFds(t, c.pid); got != fdsBefore {
		t.Errorf("%d fds before, %d after", fdsBefore, got)
	}
	c.send(t, "w")
	c.expect(t, "done")
}

// A batch runs its calls in one resume, feeds results forward, and stops at the first
// failure, leaving the calls after it unrun.
func TestBatch(t *testing.T) {
	testutil.RequireRoot(t)
	c := startChild(t, nil, buildTestdata(t, "counter"))
	c.expect(t, "")
	p := attach(t, c.pid)
	err := p.Do(func() error {
		p.ResetScratch()
		dot, err := p.putString("/")
		if err != nil {
			return err
		}
		res, err := p.batch([]Call{
			{Name: "getpid", Nr: unix.SYS_GETPID},
			{Name: "openat", Nr: unix.SYS_OPENAT, Args: []Arg{Val(atFdcwd), Val(dot), Val(unix.O_RDONLY | unix.O_DIRECTORY)}},
			{Name: "fcntl", Nr: unix.SYS_FCNTL, Args: []Arg{ResultOf(1), Val(unix.F_GETFD)}},
			{Name: "close", Nr: unix.SYS_CLOSE, Args: []Arg{ResultOf(1)}},
			{Name: "close again", Nr: unix.SYS_CLOSE, Args: []Arg{ResultOf(1)}},
			{Name: "never", Nr: unix.SYS_EXIT_GROUP, Args: []Arg{Val(9)}},
		})
		var se *SyscallError
		if !errors.As(err, &se) || se.Name != "close again" || !errors.Is(err, unix.EBADF) {
			t.Errorf("batch error %v, want EBADF from the second close", err)
		}
		if len(res) != 4 || int(res[0]) != c.pid || res[2] != 0 || res[3] != 0 {
			t.Errorf("results %v, want [%d fd 0 0]", res, c.pid)
		}
		if batchSupported && p.code == 0 {
			t.Errorf("the batch did not run as code")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	detach(t, p)
	c.expect(t, "") // still counting: exit_group never ran
}

// SwapAll swaps many fds in one batch, with spares; a bad request stops it there, with
// the fds before it swapped and the ones from it on untouched.
func TestSwapAll(t *testing.T) {
	testutil.RequireRoot(t)
	oldDir, newDir := testutil.MountTmpfs(t), testutil.MountTmpfs(t)
	var oldPaths, newPaths []string
	for _, n := range []string{"a", "b", "c"} {
		oldPaths, newPaths = append(oldPaths, filepath.Join(oldDir, n)), append(newPaths, filepath.Join(newDir, n))
		for _, p := range []string{oldPaths[len(oldPaths)-1], newPaths[len(newPaths)-1]} {
			if err := os.WriteFile(p, make([]byte, 20000), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := startChild(t, nil, buildTestdata(t, "fdkinds"), oldPaths...)
	var fds [3]int
	fmt.Sscanf(c.expect(t, "fds "), "fds %d %d %d", &fds[0], &fds[1], &fds[2])
	var before [3]fdInfo
	for i, fd := range fds {
		before[i] = readFdInfo(t, c.pid, fd)
	}
	fdsBefore := countFds(t, c.pid)
	p := attach(t, c.pid)

	os.Remove(newPaths[1])
	spares, err := p.SwapAll([]SwapRequest{{Fd: fds[0], Path: newPaths[0]}, {Fd: fds[1], Path: newPaths[1]}, {Fd: fds[2], Path: newPaths[2]}})
	if !errors.Is(err, unix.ENOENT) || len(spares) != 1 || spares[0].Target != fds[0] {
		t.Fatalf("SwapAll with a missing second target: spares %+v, err %v; want one spare and ENOENT", spares, err)
	}
	for i, fd := range fds {
		want := oldPaths[i]
		if i == 0 {
			want = newPaths[0]
		}
		if got := readFdInfo(t, c.pid, fd); got.target != want || got.flags != before[i].flags || got.pos != before[i].pos {
			t.Errorf("fd %d: %+v, want target %s with flags and pos of %+v", fd, got, want, before[i])
		}
	}
	if err := p.Restore(spares[0]); err != nil {
		t.Fatal(err)
	}

	copyFile(t, oldPaths[1], newPaths[1])
	spares, err = p.SwapAll([]SwapRequest{{Fd: fds[0], Path: newPaths[0]}, {Fd: fds[1], Path: newPaths[1]}, {Fd: fds[2], Path: newPaths[2]}})
	if err != nil || len(spares) != 3 {
		t.Fatalf("SwapAll: %v (%d spares)", err, len(spares))
	}
	for i, fd := range fds {
		if got := readFdInfo(t, c.pid, fd); got.target != newPaths[i] || got.flags != before[i].flags || got.pos != before[i].pos {
			t.Errorf("fd %d after SwapAll: %+v, want %s with flags and pos of %+v", fd, got, newPaths[i], before[i])
		}
	}
	if err := p.DropSpares(spares); err != nil {
		t.Fatal(err)
	}
	detach(t, p)
	if n := countFds(t, c.pid); n != fdsBefore {
		t.Errorf("%d fds after the spares were dropped, %d before", n, fdsBefore)
	}
	c.send(t, "w")
	c.expect(t, "done")
}
