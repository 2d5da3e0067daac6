package cutover

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
)

func TestSignalFreezerStopsAllThreadsAndThaws(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	kids := startTickers(t, src, 3, 4)
	f := NewSignalFreezer(nil)
	t.Cleanup(func() { _ = f.Thaw() })
	d, err := FreezeUsers(context.Background(), src, Options{}, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Processes) != 3 {
		t.Fatalf("discovered %v, want the 3 tickers", d.Targets())
	}
	for _, k := range kids {
		states := testutil.ThreadStates(k.pid())
		if len(states) != 4 || !testutil.AllStopped(k.pid()) {
			t.Errorf("pid %d thread states %v after Freeze, want 4 threads all T", k.pid(), states)
		}
	}
	// Stopped means stopped: nothing is written while frozen.
	sizes := tickSizes(src, len(kids))
	time.Sleep(30 * time.Millisecond)
	if now := tickSizes(src, len(kids)); !slices.Equal(now, sizes) {
		t.Errorf("tick files grew while frozen: %v -> %v", sizes, now)
	}
	if err := f.Check(); err != nil {
		t.Errorf("Check while frozen: %v", err)
	}
	for _, fp := range f.Frozen() {
		if fp.AlreadyStopped || fp.Exited || fp.SignaledAt.IsZero() || fp.StoppedAt.Before(fp.SignaledAt) {
			t.Errorf("frozen record %+v", fp)
		}
	}

	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	for _, k := range kids {
		testutil.Eventually(t, time.Second, "pid "+strconv.Itoa(k.pid())+" running", func() bool { return testutil.NoneStopped(k.pid()) })
	}
	testutil.Eventually(t, time.Second, "tick files growing again", allGrew(src, sizes))
	for _, fp := range f.Frozen() {
		if fp.ResumedAt.Before(fp.StoppedAt) {
			t.Errorf("resume time %v before stop time %v", fp.ResumedAt, fp.StoppedAt)
		}
	}
	if err := f.Thaw(); err != nil {
		t.Errorf("second Thaw: %v", err)
	}
}

// A process that was stopped before the freeze (job control) stays stopped after thaw.
func TestSignalFreezerLeavesAlreadyStoppedStopped(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	ticker := testutil.BuildC(t, tickerC, "-pthread")
	running := startChild(t, ticker, src)
	stopped := startChild(t, ticker, src)
	if err := syscall.Kill(stopped.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "pre-stopped", func() bool { return testutil.AllStopped(stopped.pid()) })

	f := NewSignalFreezer(nil)
	t.Cleanup(func() { _ = f.Thaw() })
	if _, err := FreezeUsers(context.Background(), src, Options{}, f); err != nil {
		t.Fatal(err)
	}
	byPID := map[int]FrozenProcess{}
	for _, fp := range f.Frozen() {
		byPID[fp.PID] = fp
	}
	if !byPID[stopped.pid()].AlreadyStopped || byPID[running.pid()].AlreadyStopped {
		t.Errorf("frozen records %+v", byPID)
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "the other resumed", func() bool { return testutil.NoneStopped(running.pid()) })
	time.Sleep(20 * time.Millisecond)
	if !testutil.AllStopped(stopped.pid()) {
		t.Errorf("pid %d was stopped before the freeze and is running after thaw", stopped.pid())
	}
}

// Children forked while their parent is being frozen are found by the rescan and frozen
// too: when FreezeUsers returns, nothing that uses SRC runs.
func TestFreezeUsersCatchesForksDuringFreeze(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	forker := startChild(t, testutil.BuildC(t, forkerC), src)
	time.Sleep(50 * time.Millisecond) // a population of children, born and dying

	for round := 0; round < 5; round++ {
		f := NewSignalFreezer(nil)
		d, err := FreezeUsers(context.Background(), src, Options{}, f)
		if err != nil {
			_ = f.Thaw()
			t.Fatal(err)
		}
		// Every process in /proc with its cwd under SRC must be stopped (or a zombie).
		all, err := listPIDs()
		if err != nil {
			t.Fatal(err)
		}
		users := 0
		for _, pid := range all {
			cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
			if err != nil || !strings.HasPrefix(cwd, src) || pid == os.Getpid() {
				continue
			}
			users++
			if !testutil.AllStopped(pid) {
				t.Errorf("round %d: pid %d uses %s and runs after FreezeUsers (states %v)", round, pid, src, testutil.ThreadStates(pid))
			}
		}
		if !d.has(forker.pid()) || users < 2 || len(d.Processes) != users {
			t.Errorf("round %d: discovered %d processes, %d use the source", round, len(d.Processes), users)
		}
		if err := f.Thaw(); err != nil {
			t.Fatal(err)
		}
		for _, fp := range f.Frozen() {
			testutil.Eventually(t, time.Second, "thawed", func() bool { return testutil.NoneStopped(fp.PID) })
		}
	}
}

// delayedFreezer widens the race between discovery and the first freeze, as a slow
// machine would, so that the forker surely has children the first discovery missed.
type delayedFreezer struct {
	*SignalFreezer
	delay time.Duration
	calls int
}

func (f *delayedFreezer) Freeze(ctx context.Context, targets []Target) error {
	if f.calls == 0 {
		time.Sleep(f.delay)
	}
	f.calls++
	return f.SignalFreezer.Freeze(ctx, targets)
}

func TestFreezeUsersRescansForNewChildren(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	forker := startChild(t, testutil.BuildC(t, forkerC), src)
	f := &delayedFreezer{SignalFreezer: NewSignalFreezer(nil), delay: 50 * time.Millisecond}
	t.Cleanup(func() { _ = f.Thaw() })
	d, err := FreezeUsers(context.Background(), src, Options{}, f)
	if err != nil {
		t.Fatal(err)
	}
	if f.calls < 2 {
		t.Errorf("Freeze called %d time(s): the children born during the delay were not caught by a rescan", f.calls)
	}
	for _, p := range d.Processes {
		if !testutil.AllStopped(p.PID) {
			t.Errorf("pid %d (ppid %d, forker %d) discovered but running", p.PID, p.PPID, forker.pid())
		}
	}
}

func TestSignalFreezerCheckSeesExternalResume(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	c := startChild(t, testutil.BuildC(t, tickerC, "-pthread"), src)
	f := NewSignalFreezer(nil)
	t.Cleanup(func() { _ = f.Thaw() })
	if _, err := FreezeUsers(context.Background(), src, Options{}, f); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(c.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "resumed by hand", func() bool { return testutil.NoneStopped(c.pid()) })
	err := f.Check()
	var fe *FreezeError
	if !errors.Is(err, ErrResumedExternally) || !errors.As(err, &fe) || fe.PID != c.pid() {
		t.Errorf("Check after an outside SIGCONT: %v, want ErrResumedExternally for pid %d", err, c.pid())
	}
}

// A target whose pid now belongs to another process (different start time) is not
// touched.
func TestSignalFreezerSkipsReusedPID(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	c := startChild(t, testutil.BuildC(t, tickerC, "-pthread"), src)
	st, err := readProcStat("/proc/" + strconv.Itoa(c.pid()) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := NewSignalFreezer(nil)
	t.Cleanup(func() { _ = f.Thaw() })
	if err := f.Freeze(context.Background(), []Target{{PID: c.pid(), StartTime: st.StartTime + 1}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if !testutil.NoneStopped(c.pid()) || len(f.Frozen()) != 0 {
		t.Errorf("a process with another start time was frozen: %+v", f.Frozen())
	}
}

// startTickers starts n tickers of threads threads each, ticker i in src/i.
func startTickers(t *testing.T, src string, n, threads int) []*child {
	t.Helper()
	bin := testutil.BuildC(t, tickerC, "-pthread")
	var kids []*child
	for i := 0; i < n; i++ {
		dir := filepath.Join(src, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		kids = append(kids, startChild(t, bin, dir, strconv.Itoa(threads)))
	}
	return kids
}

// allGrew says whether every ticker has written since the sizes before were taken.
func allGrew(src string, before []int64) func() bool {
	return func() bool {
		now := tickSizes(src, len(before))
		for i := range now {
			if now[i] <= before[i] {
				return false
			}
		}
		return true
	}
}

func tickSizes(src string, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = testutil.FileSize(filepath.Join(src, strconv.Itoa(i), "ticks"))
	}
	return out
}

// A process that cannot stop (here: a vfork parent waiting for its child) makes Freeze
// fail with a typed error naming the pid, the thread and its state.
func TestSignalFreezerTimeout(t *testing.T) {
	testutil.RequireRoot(t)
	c := startChild(t, testutil.BuildC(t, vforkC))
	parent, child := c.int(t, "parent"), c.int(t, "child")
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	testutil.Eventually(t, time.Second, "vfork parent waiting", func() bool { return testutil.ThreadStates(parent)[parent] == "D" })
	target, err := TargetOf(parent)
	if err != nil {
		t.Fatal(err)
	}
	f := &SignalFreezer{StopTimeout: 100 * time.Millisecond}
	t.Cleanup(func() { _ = f.Thaw() })
	err = f.Freeze(context.Background(), []Target{target})
	var fe *FreezeError
	if !errors.Is(err, ErrStopTimeout) || !errors.As(err, &fe) || fe.PID != parent || fe.TID != parent || fe.State != 'D' {
		t.Fatalf("Freeze of a vfork parent: %v, want ErrStopTimeout for pid %d in state D", err, parent)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(parent)) {
		t.Errorf("error %q does not name the pid", err)
	}
	// Thaw still resumes it: the pending stop must not strike once the child is gone.
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if !testutil.NoneStopped(parent) {
		t.Errorf("vfork parent %d stopped after thaw: %v", parent, testutil.ThreadStates(parent))
	}
}
