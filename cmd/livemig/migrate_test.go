package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
	"github.com/livemig/livemig/internal/testutil"
)

// background is livemig running beside the test.
type background struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
}

// startLivemig starts the built binary with extra environment (the test-only knobs of
// migrate.go); it is killed at cleanup if still running.
func startLivemig(t *testing.T, env []string, args ...string) *background {
	t.Helper()
	b := &background{cmd: exec.Command(livemigBin, args...), done: make(chan struct{})}
	b.cmd.Env = append(os.Environ(), env...)
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		<-b.done
	})
	return b
}

// wait returns the exit status, failing the test after timeout.
func (b *background) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-b.done:
		return b.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("livemig %v still running after %v\nstderr:\n%s", b.cmd.Args[1:], timeout, b.stderr.String())
		return -1
	}
}

func parseMigrateReport(t *testing.T, stdout string) migrateReport {
	t.Helper()
	var r migrateReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("migrate report is not JSON: %v\n%s", err, stdout)
	}
	return r
}

func buildTestdataC(t *testing.T, name string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return testutil.BuildC(t, string(src))
}

// migrate --remount on loop ext4 with a writer: the first cutover attempt is made to
// find its final delta over budget (test knob), so the processes are thawed and it is
// tried again, and said so; the second succeeds. Every line is on the new storage once,
// in order, and the JSON report carries the pause of each process.
func TestMigrateRemountWriter(t *testing.T) {
	testutil.RequireRoot(t)
	oldFS, newFS := testutil.MountExt4(t, 32), testutil.MountExt4(t, 32)
	var oldSt unix.Stat_t
	mustT(t, unix.Stat(oldFS, &oldSt))
	t.Cleanup(func() { unmountAside(t, oldSt.Dev) })
	w := startReady(t, exec.Command(buildTestdataC(t, "writer.c"), oldFS))
	time.Sleep(50 * time.Millisecond)

	b := startLivemig(t, []string{envOverBudget + "=1"}, "migrate", "--json", "--remount", "--settle", "300ms",
		"--max-attempts", "2", "--timeout", "60s", "--status-file", filepath.Join(t.TempDir(), "status.json"), oldFS, newFS)
	code := b.wait(t, 90*time.Second)
	stdout, stderr := b.stdout.String(), b.stderr.String()
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, stdout, stderr)
	}
	r := parseMigrateReport(t, stdout)
	if r.Result != cutover.ResultDone || len(r.Attempts) != 2 || r.Attempts[0].Error == "" || r.Cutover == nil {
		t.Fatalf("report: result %q, attempts %+v\n%s", r.Result, r.Attempts, stdout)
	}
	if !strings.Contains(stderr, "cutover attempt 1 of 2") || !strings.Contains(stderr, "trying again") {
		t.Errorf("the over-budget attempt was not announced:\n%s", stderr)
	}
	found := false
	for _, p := range r.Cutover.Processes {
		if p.PauseNs <= 0 || p.ResumedNs < p.FrozenNs {
			t.Errorf("pid %d: pause %d ns", p.PID, p.PauseNs)
		}
		found = found || p.PID == w.Process.Pid
	}
	if !found {
		t.Errorf("the writer (pid %d) is not in the report:\n%s", w.Process.Pid, stdout)
	}
	if r.Verify == nil || !r.Verify.OK {
		t.Errorf("verify after the cutover: %+v", r.Verify)
	}
	time.Sleep(100 * time.Millisecond) // lines written on the new storage
	var st unix.Stat_t
	mustT(t, unix.Stat(oldFS, &st))
	assertNothingOn(t, w.Process.Pid, st.Dev, oldFS)
	if !testutil.NoneStopped(w.Process.Pid) {
		t.Errorf("the writer is stopped after the migrate")
	}
	if aside := asideMounts(oldSt.Dev); len(aside) > 0 {
		t.Errorf("the old filesystem is still mounted aside at %v", aside)
	}
	_ = unix.Kill(-w.Process.Pid, unix.SIGKILL)
	_ = w.Wait()
	for _, f := range []string{"plain", "append", "cloexec", "cwdfile"} {
		assertLines(t, filepath.Join(oldFS, f), 0) // oldFS's path now shows the new filesystem
	}
	assertLines(t, filepath.Join(oldFS, "rdwr"), 12345)
}

// A writer that dirties files faster than a deliberately slowed copier (test knob: it
// copies once a second) keeps the mirror from converging: migrate --timeout gives up
// with the figures and freezes nothing. With --throttle the writer is slowed down until
// the mirror converges, and the cutover goes through.
func TestMigrateNotConvergingThenThrottle(t *testing.T) {
	testutil.RequireRoot(t)
	churn := buildTestdataC(t, "churn.c")
	slow := []string{envCopyDelay + "=1s"}

	t.Run("timeout", func(t *testing.T) {
		src, dst := testutil.MountTmpfs(t), testutil.MountTmpfs(t)
		w := startReady(t, exec.Command(churn, src))
		b := startLivemig(t, slow, "migrate", "--json", "--max-downtime", "10ms", "--settle", "1s", "--timeout", "5s", src, dst)
		code := b.wait(t, 30*time.Second)
		stdout, stderr := b.stdout.String(), b.stderr.String()
		if code != exitFailed {
			t.Fatalf("exit %d, want 1\n%s\n%s", code, stdout, stderr)
		}
		r := parseMigrateReport(t, stdout)
		if r.Result != resultNotConverged || r.Figures == nil || len(r.Attempts) != 0 {
			t.Fatalf("report: %+v\n%s", r, stdout)
		}
		if f := r.Figures; f.Rates.DirtyPathsPerSec <= 0 || f.EstimatedPauseNs <= int64(10*time.Millisecond) {
			t.Errorf("figures do not show writes outrunning the copy: %+v", f)
		}
		for _, want := range []string{"did not converge", "changes arrive at", "mirror copies", "--throttle", "nothing was frozen"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, stderr)
			}
		}
		if !testutil.NoneStopped(w.Process.Pid) {
			t.Errorf("the writer is stopped")
		}
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", w.Process.Pid)); cwd != src {
			t.Errorf("the writer's cwd is %s, want it still on %s", cwd, src)
		}
	})

	t.Run("throttle", func(t *testing.T) {
		src, dst := testutil.MountTmpfs(t), testutil.MountTmpfs(t)
		w := startReady(t, exec.Command(churn, src))
		b := startLivemig(t, slow, "migrate", "--json", "--max-downtime", "10ms", "--settle", "1s", "--timeout", "40s",
			"--throttle", "0.95", src, dst)
		code := b.wait(t, 60*time.Second)
		stdout, stderr := b.stdout.String(), b.stderr.String()
		if code != 0 {
			t.Fatalf("exit %d, want 0\n%s\n%s", code, stdout, stderr)
		}
		r := parseMigrateReport(t, stdout)
		if r.Result != cutover.ResultDone || r.Figures == nil || r.Figures.ThrottleShare <= 0 {
			t.Fatalf("report: result %q figures %+v\n%s", r.Result, r.Figures, stdout)
		}
		if !strings.Contains(stderr, "throttling the writers") {
			t.Errorf("the throttle was not announced:\n%s", stderr)
		}
		testutil.Eventually(t, 2*time.Second, "the writer running on DST", func() bool {
			cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", w.Process.Pid))
			return cwd == dst && testutil.NoneStopped(w.Process.Pid)
		})
	})
}

// SIGINT during the first pass stops cleanly: exit 1, nothing frozen, DST a partial
// mirror. SIGINT during the cutover (held with every process frozen by a test knob)
// rolls back first: exit 1, the writer runs on the old storage, no line lost.
func TestMigrateInterrupt(t *testing.T) {
	testutil.RequireRoot(t)

	t.Run("first pass", func(t *testing.T) {
		src, dst := testutil.MountTmpfs(t), testutil.MountTmpfs(t)
		const dirs, files = 200, 300 // 60,000 entries: a first pass of a few seconds here
		for d := 0; d < dirs; d++ {
			dir := filepath.Join(src, fmt.Sprint("d", d))
			mustT(t, os.Mkdir(dir, 0o755))
			for f := 0; f < files; f++ {
				fd, err := unix.Open(filepath.Join(dir, fmt.Sprint("f", f)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				mustT(t, err)
				unix.Close(fd)
			}
		}
		w := startReady(t, exec.Command("bash", "-c", `cd "$1" && echo ready && exec sleep 100`, "bash", src))
		statusPath := filepath.Join(t.TempDir(), "status.json")
		b := startLivemig(t, nil, "migrate", "--status-file", statusPath, src, dst)
		testutil.Eventually(t, 10*time.Second, "the first pass under way", func() bool {
			d, err := readStatus(statusPath)
			return err == nil && d.Phase == phaseFirstPass && d.FirstPass != nil && d.FirstPass.EntriesDone > 0
		})
		mustT(t, b.cmd.Process.Signal(os.Interrupt))
		code := b.wait(t, 20*time.Second)
		stderr := b.stderr.String()
		if code != exitFailed || !strings.Contains(stderr, "interrupted during the first pass") || !strings.Contains(stderr, "nothing was frozen") {
			t.Fatalf("exit %d, want 1 saying it was interrupted during the first pass:\n%s", code, stderr)
		}
		if d, err := readStatus(statusPath); err != nil || d.Phase != phaseStopped {
			t.Errorf("last status: phase %q (%v), want %q", d.Phase, err, phaseStopped)
		}
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", w.Process.Pid)); cwd != src || !testutil.NoneStopped(w.Process.Pid) {
			t.Errorf("the process using SRC was touched: cwd %s", cwd)
		}
	})

	t.Run("cutover", func(t *testing.T) {
		src, dst := testutil.MountTmpfs(t), testutil.MountExt4(t, 32)
		w := startReady(t, exec.Command(buildTestdataC(t, "writer.c"), src))
		b := startLivemig(t, []string{envStallFrozen + "=20s"}, "migrate", "--json", "--settle", "200ms", src, dst)
		testutil.Eventually(t, 20*time.Second, "the writer frozen by the cutover", func() bool {
			return testutil.AllStopped(w.Process.Pid)
		})
		mustT(t, b.cmd.Process.Signal(os.Interrupt))
		code := b.wait(t, 15*time.Second)
		stdout, stderr := b.stdout.String(), b.stderr.String()
		if code != exitFailed || !strings.Contains(stderr, "interrupted during the cutover") {
			t.Fatalf("exit %d, want 1 saying the cutover was interrupted:\n%s\n%s", code, stdout, stderr)
		}
		r := parseMigrateReport(t, stdout)
		if r.Result != cutover.ResultRolledBack || r.Cutover == nil || r.Cutover.Result != cutover.ResultRolledBack {
			t.Errorf("report: %q\n%s", r.Result, stdout)
		}
		if !testutil.NoneStopped(w.Process.Pid) {
			t.Fatalf("the writer was left stopped")
		}
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", w.Process.Pid)); cwd != src {
			t.Errorf("the writer's cwd is %s, want it back on %s", cwd, src)
		}
		time.Sleep(50 * time.Millisecond)
		_ = unix.Kill(-w.Process.Pid, unix.SIGKILL)
		_ = w.Wait()
		for _, f := range []string{"plain", "append", "cloexec", "cwdfile"} {
			assertLines(t, filepath.Join(src, f), 0)
		}
	})
}

// `livemig status --json` shows a running sync: following, with its lag; after SIGINT
// the sync exits 0 and its last status says it stopped.
func TestStatusWhileSyncRuns(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	mustT(t, os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o644))
	statusPath := filepath.Join(t.TempDir(), "status.json")
	b := startLivemig(t, nil, "sync", "--status-file", statusPath, src, dst)
	var d statusDoc
	testutil.Eventually(t, 10*time.Second, "status: following", func() bool {
		code, stdout, _ := livemig(t, nil, "status", "--json", "--status-file", statusPath)
		if code != 0 || json.Unmarshal([]byte(stdout), &d) != nil {
			return false
		}
		return d.Phase == phaseFollowing
	})
	if d.Command != "sync" || !d.Running || d.PID != b.cmd.Process.Pid || d.Lag == nil || d.Stats.FilesCopied != 1 {
		t.Errorf("status: %+v", d)
	}
	code, text, _ := livemig(t, nil, "status", "--status-file", statusPath)
	if code != 0 || !strings.Contains(text, "phase:   following") || !strings.Contains(text, "estimated pause now") {
		t.Errorf("status text (exit %d):\n%s", code, text)
	}
	mustT(t, b.cmd.Process.Signal(os.Interrupt))
	if code := b.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("sync: exit %d\n%s", code, b.stderr.String())
	}
	code, stdout, _ := livemig(t, nil, "status", "--json", "--status-file", statusPath)
	if json.Unmarshal([]byte(stdout), &d) != nil || code != 0 || d.Phase != phaseStopped || d.Running {
		t.Errorf("status after the stop (exit %d): %s", code, stdout)
	}
	if code, _, stderr := livemig(t, nil, "status", "--status-file", filepath.Join(src, "none.json")); code != exitFailed || !strings.Contains(stderr, "does not exist") {
		t.Errorf("missing status file: exit %d, %s", code, stderr)
	}
}

// asideMounts lists where the filesystem of device dev is mounted aside by a cutover
// (/tmp/livemig-old-*): only this test's own old filesystem is looked for, since other
// tests on the machine may be mid-cutover.
func asideMounts(dev uint64) []string {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	want := fmt.Sprintf(" %d:%d ", unix.Major(dev), unix.Minor(dev))
	var out []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.Contains(line, want) && strings.Contains(f[4], "livemig-old-") {
			out = append(out, f[4])
		}
	}
	return out
}

// unmountAside unmounts what a failed check left mounted aside of this test's old
// filesystem, so that its loop device can go.
func unmountAside(t *testing.T, dev uint64) {
	for _, m := range asideMounts(dev) {
		if err := unix.Unmount(m, 0); err != nil {
			t.Logf("unmount %s: %v", m, err)
			continue
		}
		os.Remove(m)
	}
}
