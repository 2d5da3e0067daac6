package cutover

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
)

// helperRoleEnv makes the test binary a livemig stand-in (see TestMain), so that a test
// can kill -9 "livemig" in the middle of a cutover.
const helperRoleEnv = "LIVEMIG_TEST_HELPER"

// runHelper is the stand-in: "freeze" starts the guardian, freezes the users of
// $LIVEMIG_TEST_SRC through it, says "ready" and waits to be killed.
func runHelper(role string) int {
	if role == "cutover" {
		return runCutoverHelper()
	}
	if role != "freeze" {
		fmt.Fprintf(os.Stderr, "unknown helper role %q\n", role)
		return 2
	}
	g, err := StartGuardian(GuardianOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	f := NewSignalFreezer(g)
	d, err := FreezeUsers(context.Background(), os.Getenv("LIVEMIG_TEST_SRC"), Options{Exclude: []int{g.PID()}}, f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = f.Thaw()
		return 1
	}
	fmt.Printf("guardian %d\nfrozen %d\nready\n", g.PID(), len(d.Processes))
	select {}
}

// kill -9 of livemig right after the freeze: the guardian resumes every process within
// a second, and they make progress again.
func TestGuardianResumesWhenLivemigIsKilled(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	kids := startTickers(t, src, 3, 3)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(self)
	helper.Env = append(os.Environ(), helperRoleEnv+"=freeze", "LIVEMIG_TEST_SRC="+src)
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, helper)
	report := testutil.ReadLines(t, bufio.NewReader(out), "ready", 10*time.Second)
	if len(report) != 2 || report[1] != "frozen 3" {
		t.Fatalf("helper reported %q, want 3 frozen", report)
	}
	var guardianPID int
	fmt.Sscanf(report[0], "guardian %d", &guardianPID)
	for _, k := range kids {
		if !testutil.AllStopped(k.pid()) {
			t.Fatalf("pid %d not frozen by the helper: %v", k.pid(), testutil.ThreadStates(k.pid()))
		}
	}
	sizes := tickSizes(src, len(kids))

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, k := range kids {
		testutil.Eventually(t, time.Second-time.Since(killed), fmt.Sprintf("pid %d running after kill -9 of livemig", k.pid()),
			func() bool { return testutil.NoneStopped(k.pid()) })
	}
	t.Logf("all resumed %v after kill -9", time.Since(killed))
	testutil.Eventually(t, time.Second, "progress after resume", allGrew(src, sizes))
	// Orphaned, the guardian is reaped by whoever inherits it: gone or a zombie is done.
	testutil.Eventually(t, time.Second, "guardian exit", func() bool {
		st := testutil.ThreadStates(guardianPID)
		return len(st) == 0 || st[guardianPID] == "Z"
	})
}

// On a normal end the guardian goes without touching anything: a process someone else
// stopped after the thaw stays stopped.
func TestGuardianReleaseResumesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	c := startChild(t, testutil.BuildC(t, tickerC, "-pthread"), src)
	g := startTestGuardian(t)
	f := NewSignalFreezer(g)
	if _, err := FreezeUsers(context.Background(), src, Options{}, f); err != nil {
		_ = f.Thaw()
		t.Fatal(err)
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "thawed", func() bool { return testutil.NoneStopped(c.pid()) })
	if err := syscall.Kill(c.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "stopped by hand", func() bool { return testutil.AllStopped(c.pid()) })
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if !testutil.AllStopped(c.pid()) {
		t.Errorf("released guardian resumed pid %d", c.pid())
	}
	if err := g.Protect(Target{PID: c.pid()}); err == nil {
		t.Error("Protect after Release did not fail")
	}
}

func TestGuardianResumeAll(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	c := startChild(t, testutil.BuildC(t, tickerC, "-pthread"), src)
	g := startTestGuardian(t)
	f := NewSignalFreezer(g)
	t.Cleanup(func() { _ = f.Thaw() })
	if _, err := FreezeUsers(context.Background(), src, Options{}, f); err != nil {
		t.Fatal(err)
	}
	if !testutil.AllStopped(c.pid()) {
		t.Fatalf("pid %d not frozen", c.pid())
	}
	if err := g.ResumeAll(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "resumed by the guardian", func() bool { return testutil.NoneStopped(c.pid()) })
}

// startTestGuardian runs the test binary as the guardian (TestMain dispatches).
func startTestGuardian(t *testing.T) *Guardian {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	g, err := StartGuardian(GuardianOptions{Path: self})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.cmd.Process.Kill() })
	return g
}
